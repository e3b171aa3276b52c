"""rclone servers on 127.0.0.1 that tests upload to, over a real protocol, and can kill."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from rclone_provider.client import find_rclone


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RcloneServer:
    """``rclone serve <protocol>`` over a directory, on a free loopback port."""

    def __init__(self, protocol: str, directory: Path) -> None:
        self.protocol = protocol
        self.directory = Path(directory)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 15) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [find_rclone(), "serve", self.protocol, str(self.directory), "--addr", f"127.0.0.1:{self.port}", "--config", "/dev/null"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"rclone serve {self.protocol} did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class FlakyProxy:
    """An HTTP proxy on 127.0.0.1 in front of a server that answers ``status`` to the first ``failures`` requests.

    Stands for a remote that rate-limits or has a bad moment (429/5xx), so retries are tested against a
    real protocol exchange rather than a mock.
    """

    def __init__(self, upstream: str, *, failures: int, status: int = 503) -> None:
        import http.client
        import http.server
        import threading
        from urllib.parse import urlsplit

        self.port = free_port()
        self.failures_left = failures
        self.failed = 0
        self.forwarded = 0
        proxy = self
        target = urlsplit(upstream)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def __getattr__(self, name):
                if name.startswith("do_"):
                    return self._relay
                raise AttributeError(name)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _relay(self):
                body = self._body()
                if proxy.failures_left > 0:
                    proxy.failures_left -= 1
                    proxy.failed += 1
                    message = b"try again later"
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(message)))
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(message)
                    return
                proxy.forwarded += 1
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "transfer-encoding", "content-length")}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
