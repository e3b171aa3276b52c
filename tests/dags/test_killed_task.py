"""A backup run killed with SIGKILL mid-dump: what `backupctl logs` and `status` say once nothing is left to say it itself.

Without a scheduler nobody marks the task failed (Airflow's heartbeat-timeout detection runs in the
scheduler), so the metadata database keeps it "running": `backupctl` says it is running with no heartbeat
since when, rather than pretending it is alive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import PROJECT, admin_connection, airflow_cli, backup_env

pytestmark = pytest.mark.airflow


def dump_backends(dbname):
    conn = admin_connection()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' AND datname = %s", (dbname,))
        count = cur.fetchone()[0]
    conn.close()
    return count


@pytest.fixture
def blocked_source(shop_db):
    """pg_dump waits for this lock until it is killed."""
    blocker = shop_db.connect()
    blocker.cursor().execute('LOCK TABLE "order" IN ACCESS EXCLUSIVE MODE')
    yield shop_db
    blocker.rollback()
    blocker.close()


def test_a_run_killed_with_sigkill_shows_as_running_without_heartbeat(airflow_home, blocked_source, local_remote, tmp_path):
    env = backup_env(blocked_source, {"type": "local", "root": local_remote.root}, tmp_path / "local")
    run = subprocess.Popen([airflow_cli(), "dags", "test", "pg_full_backup"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(600):
            if dump_backends(blocked_source.dbname):
                break
            time.sleep(0.1)
        assert dump_backends(blocked_source.dbname) == 1, "pg_dump never started"
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the task's process and its pg_dump, as an OOM killer or a power cut would
        run.wait()
    # Right after the kill the task is, as far as anyone can tell, still running.
    (fresh,) = json.loads(backupctl(env, "logs", "--dag", "pg_full_backup", "-n", "1", "--json", clock="+0").stdout)
    assert fresh["state"] == "running" and fresh["stalled"] is False
    # Ten minutes on (this process's clock only), past Airflow's heartbeat timeout (300 s by default):
    env = {**env, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    logs = backupctl(env, "logs", "--dag", "pg_full_backup", "-n", "1", "--json", clock="+10m")
    (record,) = json.loads(logs.stdout)
    assert record["task_id"] == "backup.dump_compress_checksum" and record["state"] == "running" and record["stalled"] is True
    assert record["shown_state"].startswith("running, no heartbeat since ")
    table = backupctl(env, "logs", "--dag", "pg_full_backup", "-n", "1", clock="+10m")
    assert "running, no heartbeat since" in table.stdout
    status = backupctl(env, "status", clock="+10m")
    assert status.returncode == 2
    assert "task backup.dump_compress_checksum [database] of run manual__" in status.stdout and "probably died" in status.stdout


def backupctl(env, *args, clock: str):
    """``backupctl`` with its clock moved by ``clock`` (faketime), this process only."""
    return subprocess.run(["faketime", "-f", clock, sys.executable, str(PROJECT / "bin" / "backupctl"), *args],
                          env={**env, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}, capture_output=True, text=True, timeout=300)
