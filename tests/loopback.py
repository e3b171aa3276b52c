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
