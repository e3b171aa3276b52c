"""A backup task that is timed out or SIGTERMed stops its pg_dump (whole process group) and is never marked successful."""

import signal
import subprocess
import time

import pytest

from conftest import admin_connection, airflow_cli, backup_env

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
    """pg_dump will wait for this lock until it is killed."""
    blocker = shop_db.connect()
    blocker.cursor().execute('LOCK TABLE "order" IN ACCESS EXCLUSIVE MODE')
    yield shop_db
    blocker.rollback()
    blocker.close()


def dag_env(source, local_remote, tmp_path, **extra):
    return backup_env(source, {"type": "local", "root": local_remote.root}, tmp_path / "local", **extra)


def stored_files(tmp_path, local_remote):
    local = [p for p in (tmp_path / "local").rglob("*") if p.is_file()] if (tmp_path / "local").exists() else []
    remote = [p for p in __import__("pathlib").Path(local_remote.root).rglob("*") if p.is_file()]
    return local + remote


def test_timeout_kills_pg_dump_and_fails_the_task(airflow_home, blocked_source, local_remote, tmp_path):
    env = dag_env(blocked_source, local_remote, tmp_path, BACKUP_TASK_TIMEOUT="8s")
    result = subprocess.run([airflow_cli(), "dags", "test", "pg_full_backup"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "AirflowTaskTimeout" in result.stdout + result.stderr
    assert dump_backends(blocked_source.dbname) == 0
    assert stored_files(tmp_path, local_remote) == []


def test_sigterm_stops_pg_dump_and_the_task_is_not_successful(airflow_home, blocked_source, local_remote, tmp_path):
    env = dag_env(blocked_source, local_remote, tmp_path)
    run = subprocess.Popen([airflow_cli(), "dags", "test", "pg_full_backup"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(600):
            if dump_backends(blocked_source.dbname):
                break
            time.sleep(0.1)
        assert dump_backends(blocked_source.dbname) == 1, "pg_dump never started"
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    assert "was killed" in output or "DumpError" in output
    assert "new_state=success" not in output.split("dump_compress_checksum", 1)[-1].split("check_archive", 1)[0]
    assert dump_backends(blocked_source.dbname) == 0
    assert stored_files(tmp_path, local_remote) == []
