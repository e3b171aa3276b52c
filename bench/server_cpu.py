"""CPU of the PostgreSQL backends that serve some databases, read from ``/proc`` while an operation runs.

PostgreSQL does the server half of every COPY, fingerprint and key query the capture and
the restore send; ``getrusage`` in the measured process cannot see it (a backend is the
postmaster's child, not ours). ``pg_stat_statements`` is not available here, so this reads
the kernel's own counters instead: every ``poll_s`` it lists the postmaster's children
(``/proc/<postmaster>/task/<postmaster>/children``), keeps those whose process title names
one of the watched databases — client backends (``postgres: <cluster>: <user> <database>
<host> ...``) and the parallel workers of those backends (``parallel worker for PID <n>``) —
and records each one's ``utime + stime``. A process is identified by pid *and* start time,
so a reused pid is a new process.

What is counted, and what is not:

- counted: every client backend connected to a watched database while it was seen, and the
  parallel workers it started; each one's CPU up to its last sample;
- lost: a backend's CPU after its last sample (at most ``poll_s`` of it), and backends that
  lived shorter than ``poll_s`` (a connection that only checks a version, say);
- not counted: autovacuum, the checkpointer, the WAL writer and background writer (shared by
  every database on the server, and other people's tests run on it too), and the backends of
  Airflow's own metadata database.

Only for a server on this machine: when the postmaster's ``/proc`` entry cannot be read,
:meth:`ServerCpu.stop` returns ``None`` and the report says "not measured".
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pgbackup.postgres.target import PgTarget

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


class ServerCpu:
    """Samples the watched databases' backends on a thread, from :meth:`start` to :meth:`stop`."""

    def __init__(self, server: PgTarget, databases: list[str], *, poll_s: float = 0.02) -> None:
        self.databases = set(databases)
        self.poll_s = poll_s
        self.postmaster = postmaster_pid(server)
        self._cpu_ticks: dict[tuple[int, int], int] = {}  # (pid, start time) -> utime + stime, last seen
        self._leaders: set[int] = set()  # pids of watched client backends, for their parallel workers
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="server-cpu", daemon=True)

    def start(self) -> ServerCpu:
        if self.postmaster is not None:
            self._sample()  # before the operation connects: a backend already there counts from here
            self._baseline = dict(self._cpu_ticks)
            self._thread.start()
        return self

    def stop(self) -> dict | None:
        """``{"cpu_s": ..., "backends": n}`` of what was seen since :meth:`start`, or ``None`` if not measurable."""
        if self.postmaster is None:
            return None
        self._stopping.set()
        self._thread.join()
        self._sample()
        ticks = sum(total - self._baseline.get(key, 0) for key, total in self._cpu_ticks.items())
        return {"cpu_s": ticks / TICKS_PER_SECOND, "backends": len(self._cpu_ticks.keys() - self._baseline.keys())}

    def _poll(self) -> None:
        while not self._stopping.wait(self.poll_s):
            self._sample()

    def _sample(self) -> None:
        try:
            children = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children").read_text().split()
        except OSError:
            return
        for pid in map(int, children):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it ended between the listing and the read
            if not self._watched(pid, title):
                continue
            # /proc/<pid>/stat after the ")": state is field 3, utime 14, stime 15, starttime 22 (proc(5)).
            self._cpu_ticks[(pid, int(fields[19]))] = int(fields[11]) + int(fields[12])

    def _watched(self, pid: int, title: str) -> bool:
        kind, what = read_title(title)
        if kind == "backend" and what in self.databases:
            self._leaders.add(pid)
            return True
        return kind == "parallel worker" and what in self._leaders


def read_title(title: str) -> tuple[str | None, str | int | None]:
    """What a PostgreSQL process title says: ``("backend", database)`` for a client backend,
    ``("parallel worker", leader pid)``, or ``(None, None)`` for anything else (autovacuum, the
    checkpointer, a WAL sender...). ``cluster_name``, when set, prefixes the title ("15/main:")."""
    words = title.removeprefix("postgres: ").split()
    if words and words[0].endswith(":"):
        words = words[1:]
    if words[:3] == ["parallel", "worker", "for"] and len(words) >= 5 and words[4].isdigit():
        return "parallel worker", int(words[4])
    # A client backend: user, database, host(port) or [local], then its activity.
    if len(words) >= 3 and (words[2].endswith(")") or words[2] == "[local]"):
        return "backend", words[1]
    return None, None


def postmaster_pid(server: PgTarget) -> int | None:
    """The postmaster's pid (the parent of a backend of ours), or ``None`` when it is not on this machine."""
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend = cur.fetchone()[0]
        try:
            parent = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
            Path(f"/proc/{parent}/task/{parent}/children").read_text()
        except (OSError, ValueError):
            return None
        return parent
    finally:
        conn.close()
