"""The backup operators outside a DAG run: a kill stops every child they started, and the task fails as killed.

Each test waits for the child to be demonstrably running (a lock wait in
pg_stat_activity, a process that wrote its pid), kills the task the way Airflow
does (``on_kill`` from another thread), and then waits on the children's exit.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zstandard

from conftest import admin_connection
from pgbackup.capture.captured import CapturedBackup
from pgbackup.postgres.target import PgTools
from pgbackup_airflow import operators
from pgbackup_airflow.operators import CaptureBackupOperator, CheckArchiveOperator
from rclone_provider.child_process import ProcessCancelled

# A stand-in pg_restore and real PostgreSQL: the full suite's tier, not the unit one.
pytestmark = pytest.mark.integration


def wait_until(condition, what: str, timeout: float = 60):
    """Poll ``condition`` (observable state: a process, a catalog row) until it holds, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f}s"
        time.sleep(0.05)
    return result


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def backends(dbname: str, application_name: str, *, waiting_for_lock: bool = False) -> int:
    conn = admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s"
                        " AND (NOT %s OR wait_event_type = 'Lock')", (dbname, application_name, waiting_for_lock))
            return cur.fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def blocked_order(shop_db):
    """``order`` locked ACCESS EXCLUSIVE: a capture's pg_dump waits for it until it is killed."""
    blocker = shop_db.connect()
    blocker.cursor().execute('LOCK TABLE "order" IN ACCESS EXCLUSIVE MODE')
    yield shop_db
    blocker.rollback()
    blocker.close()


def test_killing_the_capture_mid_dump_stops_pg_dump_and_fails_the_task_as_killed(blocked_order, local_remote, tmp_path, monkeypatch):
    source = blocked_order
    monkeypatch.setenv("AIRFLOW_CONN_BACKUP_SOURCE", f"postgresql://{source.user}@{source.host}:{source.port}/{source.dbname}")
    monkeypatch.setenv("AIRFLOW_CONN_BACKUP_REMOTE", json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": local_remote.root}}))
    local = tmp_path / "local"
    operator = CaptureBackupOperator(task_id="dump", kind="full", rclone_conn_id="backup_remote", local_dir=str(local))
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        run = pool.submit(operator.execute, {})
        wait_until(lambda: backends(source.dbname, "pg_dump", waiting_for_lock=True), "pg_dump waiting for the lock on order")
        (dump,) = operator._running.children.running()
        operator.on_kill()
        with pytest.raises(ProcessCancelled, match="dump was killed; its work is discarded"):
            run.result(timeout=60)
    finally:
        pool.shutdown(wait=False)  # a kill that failed must not hang the test: the lock goes with the fixture
    assert dump.proc.wait(timeout=30) != 0
    wait_until(lambda: not backends(source.dbname, "pg_dump"), "pg_dump's session ending")
    assert not [p for p in (local / "database").rglob("*") if p.is_file()], "a killed capture keeps no object"
    assert not list((local / "state").rglob("*.rows.zst")), "nor any row-key state"


@pytest.fixture
def stalling_pg_restore(tmp_path, monkeypatch) -> Path:
    """A pg_restore that never reads its input and forks a child: the archive check stalls writing to it until killed.

    Yields the file where it writes its own pid and its child's; whatever is still running at the end is killed.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pidfile = tmp_path / "pg_restore.pids"
    script = bin_dir / "pg_restore"
    script.write_text(f"#!/bin/sh\nsleep 300 &\necho $$ $! > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}\nwait\n")
    script.chmod(0o755)
    monkeypatch.setattr(operators, "tools_for_server", lambda num, bin_dir_=None: PgTools(bin_dir, num // 10000, "15.4"))
    yield pidfile
    if pidfile.exists():  # a kill that failed leaves nothing behind for the machine
        try:
            os.killpg(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_killing_the_archive_check_stops_pg_restore_and_fails_the_task_as_killed(stalling_pg_restore, tmp_path):
    archive = tmp_path / "big.dump.zst"
    size = 16 * 1024 * 1024  # far more than a pipe holds: the check blocks writing to pg_restore
    archive.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(b"\0" * size))
    captured = CapturedBackup(
        backup_id="b", kind="full", object_path="database/full/b.dump.zst", path=str(archive), bytes=archive.stat().st_size,
        sha256="-", uncompressed_bytes=size, database="shop", server_version="15.4", pg_dump_version="15.4",
        started_at="2026-12-01T00:00:00+00:00", finished_at="2026-12-01T00:01:00+00:00", compression={},
        details={"tables": {"public.t": {}}},
    )
    operator = CheckArchiveOperator(task_id="check_archive", captured=captured.to_dict())
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        run = pool.submit(operator.execute, {})
        pids = wait_until(lambda: stalling_pg_restore.exists() and stalling_pg_restore.read_text().split(), "pg_restore starting")
        operator.on_kill()
        wait_until(lambda: all(process_gone(int(pid)) for pid in pids), "pg_restore and its child exiting", timeout=30)
        with pytest.raises(ProcessCancelled, match="stopped before it finished"):
            run.result(timeout=60)
    finally:
        pool.shutdown(wait=False)
    assert operator._running.running() == [], "the registry forgets the child once it has exited"
