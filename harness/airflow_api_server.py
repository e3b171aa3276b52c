"""Real, long-running Airflow components on 127.0.0.1 for tests and the bench: any ``airflow <command>`` as an
:class:`AirflowProcess`, and the api-server with SimpleAuthManager users the caller chooses.

A dev-only module of its own distribution (harness/pyproject.toml, installed by `make venv`), so that tests/ and
bench/ import it by name; the ``airflow`` it runs is the one beside this venv's Python."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def airflow_cli() -> str:
    """The ``airflow`` console script of the venv running this Python."""
    return str(Path(sys.executable).with_name("airflow"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AirflowProcess:
    """``airflow <args>`` in its own process group, stdout and stderr in ``log_path``.

    ``stop()`` ends that group (SIGTERM, then SIGKILL), then every descendant seen on the
    way that is still alive: Airflow's supervisor runs each task in a process group of its
    own, and pg_dump runs in yet another, so the group alone would not take them.
    """

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._descendants: dict[int, psutil.Process] = {}

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [airflow_cli(), *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_running(self) -> None:
        """Raise, with the end of its log, when the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"airflow {self.name} exited with {self.process.returncode}:\n{self.log_tail()}")

    def _note_descendants(self) -> None:
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self._descendants.setdefault(child.pid, child)
        except psutil.Error:
            pass

    def terminate(self) -> None:
        """SIGTERM to the group, without waiting (see :meth:`stop`)."""
        if self.process is not None and self.process.poll() is None:
            self._note_descendants()
            _signal_group(self.process.pid, signal.SIGTERM)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the group, up to ``timeout`` s for the command to exit, then SIGKILL to what is left."""
        if self.process is None:
            return
        self._note_descendants()
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # The leader may be gone while children it left in the group still run (a worker's pool).
        _signal_group(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for child in self._descendants.values():
            try:
                if child.is_running():  # same pid and start time: not a reused pid
                    child.kill()
            except psutil.Error:
                pass

    def log_tail(self, chars: int = 4000) -> str:
        return log_tail(self.log_path, chars)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def log_tail(path: Path, chars: int = 4000) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - chars))
        return f.read().decode(errors="replace")


class ApiServer:
    """``airflow api-server`` on a free loopback port, with SimpleAuthManager users.

    ``apps``: ``core`` (UI and REST API) is enough for UI tests; workers that run tasks also
    need ``execution`` (the Task Execution API), which ``all`` includes.
    """

    def __init__(self, workdir: Path, users: dict[str, tuple[str, str]], env: dict[str, str] | None = None,
                 *, apps: str = "core", base_env: dict[str, str] | None = None) -> None:
        """``users``: name → (role, password); ``env`` overrides ``base_env`` (default: this process's)."""
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "api-server.log"
        passwords = workdir / "simple_auth_manager_passwords.json"
        passwords.write_text(json.dumps({name: password for name, (_, password) in users.items()}))
        passwords.chmod(0o600)
        self.env = {
            **(os.environ if base_env is None else base_env),
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{name}:{role}" for name, (role, _) in users.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__SECRET_KEY": "pgbackup-ui-test-secret-key",
            "AIRFLOW__API_AUTH__JWT_SECRET": "pgbackup-ui-test-jwt-secret-0123456789abcdef",
            "AIRFLOW__API__WORKERS": "1",
            **(env or {}),
        }
        self._tokens: dict[str, str] = {}
        self.component = AirflowProcess(
            "api-server",
            ["api-server", "--apps", apps, "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            self.env, self.log_path,
        )

    @property
    def process(self) -> subprocess.Popen | None:
        return self.component.process

    def launch(self) -> None:
        """Start the process without waiting for it (see :meth:`ready`)."""
        self.component.start()

    def ready(self) -> bool:
        """True once the API answers its health check; raises if the process has exited."""
        self.component.check_running()
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def start(self, timeout: float = 180) -> None:
        self.launch()
        deadline = time.monotonic() + timeout
        try:
            while not self.ready():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"api-server not up after {timeout}s:\n{self.log_tail()}")
                time.sleep(0.3)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.component.stop()

    def log_tail(self, chars: int = 4000) -> str:
        return self.component.log_tail(chars)

    def token(self, username: str, password: str) -> str:
        """A JWT from Airflow's own login endpoint, as the UI and API clients get one."""
        request = urllib.request.Request(
            f"{self.url}/auth/token", data=json.dumps({"username": username, "password": password}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["access_token"]

    def call(self, method: str, path: str, token: str, body: dict | None = None):
        """A JSON request to the REST API with a bearer token: (status, parsed body), or (status, error text)."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")


    def request_as(self, username: str, password: str, method: str, path: str, body: dict | None = None, *,
                   error: type[Exception] = RuntimeError):
        """:meth:`call` as ``username`` (a token got once per user): the parsed body; ``error`` for an HTTP error status."""
        if username not in self._tokens:
            self._tokens[username] = self.token(username, password)
        status, result = self.call(method, path, self._tokens[username], body)
        if status >= 400:
            raise error(f"{method} {path}: HTTP {status} {str(result)[:2000]}")
        return result


def get(url: str, *, headers: dict[str, str] | None = None, timeout: float = 60):
    """GET without following redirects: (status, headers, body text)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
            return response.status, dict(response.headers), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode(errors="replace")
