"""A backup task that is timed out or SIGTERMed stops its pg_dump (whole process group) and is never marked successful."""

import signal
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from commands import dags_test, task_states
from conftest import airflow_cli, backup_env
from waiting import backends, wait_for_lock_wait

pytestmark = pytest.mark.airflow


def dag_env(source, local_remote, tmp_path, **extra):
    return backup_env(source, {"type": "local", "root": local_remote.root}, tmp_path / "local", **extra)


def stored_files(tmp_path, local_remote):
    local = [p for p in (tmp_path / "local").rglob("*") if p.is_file()] if (tmp_path / "local").exists() else []
    remote = [p for p in Path(local_remote.root).rglob("*") if p.is_file()]
    return local + remote


def test_timeout_kills_pg_dump_and_fails_the_task(airflow_home, blocked_source, local_remote, tmp_path):
    env = dag_env(blocked_source, local_remote, tmp_path, BACKUP_TASK_TIMEOUT="8s")
    result = dags_test("pg_full_backup", env, timeout=300)
    assert result.returncode != 0
    assert "AirflowTaskTimeout" in result.stdout + result.stderr
    assert backends(blocked_source.dbname) == []
    assert stored_files(tmp_path, local_remote) == []


def test_sigterm_stops_pg_dump_and_the_task_is_not_successful(airflow_home, blocked_source, local_remote, tmp_path):
    env = dag_env(blocked_source, local_remote, tmp_path)
    started = datetime.now(timezone.utc)
    run = subprocess.Popen([airflow_cli(), "dags", "test", "pg_full_backup"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert len(wait_for_lock_wait(blocked_source.dbname, timeout=300)) == 1, "one pg_dump, waiting for the lock"
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    assert "was killed" in output or "DumpError" in output
    tasks = task_states("pg_full_backup", started_after=started)
    dump = {t: s.state for t, s in tasks.items() if t.startswith("backup.dump_compress_checksum")}
    assert dump and "success" not in dump.values(), tasks
    assert not [t for t, s in tasks.items() if t.startswith(("backup.check_archive", "backup.upload")) and s.state == "success"], tasks
    assert backends(blocked_source.dbname) == []
    assert stored_files(tmp_path, local_remote) == []
