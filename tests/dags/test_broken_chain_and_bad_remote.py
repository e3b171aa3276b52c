"""Broken chains are loud, and a broken remote is found before anything is dumped.

Real runs with `airflow dags test` on the real rclone local remote, then `backupctl` as the operator types it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from commands import backupctl, dags_test
from conftest import backup_env
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from rclone_provider.client import Rclone
from sample_shop import mutate_sample_shop

pytestmark = pytest.mark.airflow
LAYOUT = BackupLayout("database")


def test_a_middle_incremental_without_its_manifest_is_loud_everywhere(airflow_home, shop_db, local_remote, tmp_path):
    env = backup_env(shop_db, {"type": "local", "root": local_remote.root}, tmp_path / "local")
    for dag_id, seed in (("pg_full_backup", None), ("pg_incremental_backup", 31), ("pg_incremental_backup", 32)):
        if seed:
            conn = shop_db.connect()
            mutate_sample_shop(conn, 0.02, seed)
            conn.close()
        result = dags_test(dag_id, env)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    remote = Rclone(local_remote)
    full, middle, tip = Catalog.load(remote, LAYOUT).backups
    assert tip.parent_id == middle.id
    remote.delete(LAYOUT.manifest_path("incremental", middle.id))

    status = backupctl(env, "status")
    assert status.returncode == 2
    assert f"backup {tip.id} needs {middle.id}, which has no manifest" in status.stdout.split("WARNINGS", 1)[1]
    verify = backupctl(env, "verify")
    assert verify.returncode == 1 and f"PROBLEM  backup {tip.id} needs {middle.id}" in verify.stdout

    # Two days on (past the orphan grace), retention still keeps the object the tip's chain names.
    pruned = backupctl(env, "retention", clock="+2d")
    assert pruned.returncode == 0, pruned.stderr
    assert f"keep   orphan {middle.artifact.path}: kept backup {tip.id} needs it" in pruned.stdout
    assert remote.stat(middle.artifact.path) is not None

    promoted = dags_test("pg_incremental_backup", env)
    assert promoted.returncode == 0, (promoted.stdout + promoted.stderr)[-3000:]
    newest = Catalog.load(remote, LAYOUT).backups[-1]
    reason = f"the newest backup cannot be restored (restoring {tip.id} needs {middle.id}, which is not in the catalog)"
    assert newest.kind == "full" and newest.details["promoted_from_incremental"] == reason
    assert f"Taking a full backup instead of an incremental: {reason}" in promoted.stdout + promoted.stderr


@pytest.mark.parametrize(
    "remote_connection, cause",
    [
        ('{"conn_type": "rclone", "extra": {"type": "local", "root": ', "AIRFLOW_CONN_BACKUP_REMOTE is not valid JSON"),  # cut off
        (json.dumps({"conn_type": "rclone", "extra": {"type": "dropboxx", "root": "/x"}}), "unknown rclone backend type 'dropboxx'"),
    ],
)
def test_a_broken_remote_connection_fails_the_capture_before_pg_dump(airflow_home, shop_db, tmp_path, remote_connection, cause):
    env = backup_env(shop_db, None, tmp_path / "local", AIRFLOW_CONN_BACKUP_REMOTE=remote_connection)
    result = backupctl(env, "full")
    assert result.returncode == 1
    assert "remote connection 'backup_remote' cannot be used, nothing was dumped" in result.stderr and cause in result.stderr, result.stderr
    log_file = Path(result.stdout.split("full output: ", 1)[1].split(")", 1)[0])
    assert "using pg_dump" not in log_file.read_text()  # the capture stopped before it chose a pg_dump
    assert not list((tmp_path / "local").rglob("*.dump.zst*"))
    logs = backupctl({**env, "AIRFLOW_CONN_BACKUP_REMOTE": json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": str(tmp_path)}})},
                     "logs", "--failed", "-n", "1", "--json")
    (record,) = json.loads(logs.stdout)
    assert record["task_id"] == "backup.dump_compress_checksum" and "cannot be used, nothing was dumped" in (record["error"] or ""), record
