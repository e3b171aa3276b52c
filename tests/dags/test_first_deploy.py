"""A first deploy is calm: on an empty catalog the drill and the staleness check skip, record nothing and alert no one;
once backups existed and stopped, the staleness check still fails and alerts.  Real runs with `airflow dags test`."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import airflow_cli, smtp_connection_env
from factories import manifest
from pgbackup.model.layout import BackupLayout

pytestmark = pytest.mark.airflow
LAYOUT = BackupLayout("database")


@pytest.fixture
def deploy_env(airflow_home, local_remote, tmp_path, smtp_server, shop_db):
    controller, inbox = smtp_server
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "BACKUP_"))}
    env.update(
        AIRFLOW_CONN_BACKUP_REMOTE=json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": local_remote.root}}),
        AIRFLOW_CONN_BACKUP_SOURCE=f"postgresql://{shop_db.user}@{shop_db.host}:{shop_db.port}/{shop_db.dbname}",
        BACKUP_LOCAL_DIR=str(tmp_path / "local"),
        BACKUP_TASK_RETRIES="0",
        BACKUP_ALERT_EMAILS="ops@example.com",
        **smtp_connection_env(controller.port),
    )
    return env, inbox


def run_dag(dag_id: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([airflow_cli(), "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=300)


def stored_files(local_remote) -> list[Path]:
    return [p for p in Path(local_remote.root).rglob("*") if p.is_file()]


def test_drill_on_an_empty_catalog_skips_records_nothing_and_alerts_no_one(deploy_env, local_remote):
    env, inbox = deploy_env
    result = run_dag("pg_restore_drill", env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "no backup has been taken under database/ yet: nothing to drill (first deploy)" in output
    assert stored_files(local_remote) == [], "a skipped drill records no result for status to show as failed"
    assert inbox.envelopes == []


def test_staleness_check_on_an_empty_catalog_skips_and_alerts_no_one(deploy_env):
    env, inbox = deploy_env
    result = run_dag("pg_backup_staleness", env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "No backup has been taken under database/ yet: nothing to check until the first backup lands" in output
    assert inbox.envelopes == []


def first_backup_in_flight(local_remote) -> Path:
    """The first backup as the checks can find it mid-way: its object uploaded and verified, its manifest not yet written."""
    first = manifest("full", datetime.now(timezone.utc) - timedelta(seconds=30))
    stored = Path(local_remote.root) / first.artifact.path
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"x" * first.artifact.bytes)
    return stored


@pytest.mark.parametrize("dag_id, said", [
    ("pg_backup_staleness", "No backup has been taken under database/ yet: nothing to check until the first backup lands"),
    ("pg_restore_drill", "no backup has been taken under database/ yet: nothing to drill (first deploy)"),
])
def test_a_check_that_looks_while_the_first_backup_is_in_flight_skips_and_alerts_no_one(deploy_env, local_remote, dag_id, said):
    # A first deploy starts every DAG's latest interval at once: the full's object can be on the remote, its manifest not
    # yet, when the staleness check or the drill reads the catalog.  That is a first deploy, not a lost backup.
    env, inbox = deploy_env
    stored = first_backup_in_flight(local_remote)
    result = run_dag(dag_id, env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert said in output and "the first backup's 1 object(s) are stored, its manifest not yet" in output
    assert stored_files(local_remote) == [stored], "a skipped drill records no result"
    assert inbox.envelopes == []


def test_backups_that_stopped_still_fail_the_staleness_check_and_alert(deploy_env, local_remote):
    env, inbox = deploy_env
    del env["AIRFLOW_CONN_BACKUP_SOURCE"]  # the source is gone too: the one source stored is the one checked
    old = manifest("full", datetime.now(timezone.utc) - timedelta(days=3))
    root = Path(local_remote.root)
    (root / old.artifact.path).parent.mkdir(parents=True)
    (root / old.artifact.path).write_bytes(b"x" * old.artifact.bytes)
    (root / LAYOUT.manifest_path("full", old.id)).write_bytes(old.to_json())
    result = run_dag("pg_backup_staleness", env)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "no successful backup since" in output and old.id in output
    (envelope,) = inbox.envelopes
    assert b"FAILED pg_backup_staleness.check_backup_freshness" in envelope.content
