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

import pytest

from commands import backupctl
from conftest import airflow_cli, backup_env
from waiting import wait_for_lock_wait

pytestmark = pytest.mark.airflow


def test_a_run_killed_with_sigkill_shows_as_running_without_heartbeat(airflow_home, blocked_source, local_remote, tmp_path):
    env = backup_env(blocked_source, {"type": "local", "root": local_remote.root}, tmp_path / "local")
    run = subprocess.Popen([airflow_cli(), "dags", "test", "pg_full_backup"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert len(wait_for_lock_wait(blocked_source.dbname, timeout=300)) == 1, "one pg_dump, waiting for the lock"
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the task's process and its pg_dump, as an OOM killer or a power cut would
        run.wait()
    # Right after the kill the task is, as far as anyone can tell, still running.
    (fresh,) = json.loads(backupctl(env, "logs", "--dag", "pg_full_backup", "-n", "1", "--json", clock="+0").stdout)
    assert fresh["state"] == "running" and fresh["stalled"] is False
    # Ten minutes on (this process's clock only), past Airflow's heartbeat timeout (300 s by default):
    logs = backupctl(env, "logs", "--dag", "pg_full_backup", "-n", "1", "--json", clock="+10m")
    (record,) = json.loads(logs.stdout)
    assert record["task_id"] == "backup.dump_compress_checksum" and record["state"] == "running" and record["stalled"] is True
    assert record["shown_state"].startswith("running, no heartbeat since ")
    table = backupctl(env, "logs", "--dag", "pg_full_backup", "-n", "1", clock="+10m")
    assert "running, no heartbeat since" in table.stdout
    status = backupctl(env, "status", clock="+10m")
    assert status.returncode == 2
    assert "task backup.dump_compress_checksum [database] of run manual__" in status.stdout and "probably died" in status.stdout

