"""A private PostgreSQL cluster for tests that must do what the shared server cannot: refuse a wrong
password (it requires scram-sha-256) or restart in the middle of a dump."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopback import free_port
from pgbackup.postgres.target import PgTarget

BIN = Path("/usr/lib/postgresql") / sorted(p.name for p in Path("/usr/lib/postgresql").iterdir())[-1] / "bin"


class PrivateCluster:
    """initdb + pg_ctl as the ``postgres`` OS user, on a free port, password authentication only."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgbackup-cluster-"))
        shutil.chown(self.dir, "postgres")
        self.data = self.dir / "data"

    def _as_postgres(self, *argv: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, check=True, **kwargs)

    def start(self) -> PrivateCluster:
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        shutil.chown(pwfile, "postgres")
        pwfile.chmod(0o600)
        self._as_postgres(str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}")
        pwfile.unlink()
        self.pg_ctl("start")
        return self

    def pg_ctl(self, action: str) -> None:
        self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.dir / "log"),
                          "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", action)

    def target(self, dbname: str = "postgres", password: str | None = None) -> PgTarget:
        return PgTarget(dbname=dbname, host="127.0.0.1", port=self.port, user="postgres", password=password or self.password)

    def restart(self) -> None:
        # -l: without a log file the new postmaster would hold our output pipes open forever.
        self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "-l", str(self.dir / "log"), "restart",
                          "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1")

    def stop(self) -> None:
        try:
            self.pg_ctl("stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def running_cluster(password: str) -> Iterator[PrivateCluster]:
    """A fixture's body: a started cluster, stopped afterwards; the test is skipped where none can start."""
    try:
        running = PrivateCluster(password).start()
    except Exception as exc:  # runuser/initdb missing: not this machine's kind
        pytest.skip(f"cannot start a private PostgreSQL cluster: {exc}")
    yield running
    running.stop()
