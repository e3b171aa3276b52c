"""Several remotes: every backup is uploaded and verified on each; one failing fails the run but the others still
get their copy; restore takes the first intact copy and falls back to the next."""

import json
import subprocess
import sys

import pytest

from conftest import PROJECT, airflow_cli, backup_env
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from pgcompare import database_content
from rclone_provider.client import Rclone, RemoteConfig

pytestmark = pytest.mark.airflow
LAYOUT = BackupLayout("database")


def test_every_remote_gets_a_copy_and_restore_falls_back_past_a_corrupt_one(airflow_home, shop_db, tmp_path, make_database):
    roots = {name: tmp_path / name for name in ("primary", "secondary")}
    env = backup_env(
        shop_db, None, tmp_path / "local",
        BACKUP_REMOTE_CONN_ID="backup_primary,backup_secondary",
        **{f"AIRFLOW_CONN_BACKUP_{name.upper()}": json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": str(root)}})
           for name, root in roots.items()},
    )
    run = subprocess.run([airflow_cli(), "dags", "test", "pg_full_backup"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    catalogs = {name: Catalog.load(Rclone(RemoteConfig.from_extra(name, {"type": "local", "root": str(root)})), LAYOUT) for name, root in roots.items()}
    (backup,) = catalogs["primary"].backups
    assert [b.id for b in catalogs["secondary"].backups] == [backup.id]

    status = subprocess.run([sys.executable, str(PROJECT / "bin" / "backupctl"), "status"], env=env, capture_output=True, text=True)
    assert "Also on remote backup_secondary: 1 backups" in status.stdout

    stored = roots["primary"] / backup.artifact.path
    data = bytearray(stored.read_bytes())
    data[len(data) // 3] ^= 0x10
    stored.write_bytes(bytes(data))
    target = make_database("fallback")
    restored = subprocess.run(
        [sys.executable, str(PROJECT / "bin" / "backupctl"), "restore", "--to", f"postgresql://postgres@127.0.0.1:5432/{target.dbname}"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert restored.returncode == 0, restored.stderr[-3000:]
    assert "Remote backup_primary: backup" in restored.stderr and "is corrupt" in restored.stderr and "trying backup_secondary" in restored.stderr
    assert "from remote backup_secondary" in restored.stdout
    assert database_content(target) == database_content(shop_db)


def test_a_dead_remote_fails_the_run_while_the_other_copy_lands(airflow_home, shop_db, webdav_server, tmp_path):
    good_root = tmp_path / "good"
    env = backup_env(
        shop_db, None, tmp_path / "local",
        BACKUP_REMOTE_CONN_ID="backup_good,backup_dead",
        AIRFLOW_CONN_BACKUP_GOOD=json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": str(good_root)}}),
        AIRFLOW_CONN_BACKUP_DEAD=json.dumps({"conn_type": "rclone", "extra": {
            "type": "webdav", "url": webdav_server.url, "flags": ["--retries=1", "--low-level-retries=1"]}}),
    )
    webdav_server.stop()
    run = subprocess.run([airflow_cli(), "dags", "test", "pg_full_backup"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0
    assert "upload_backup_dead" in run.stdout
    (backup,) = Catalog.load(Rclone(RemoteConfig.from_extra("good", {"type": "local", "root": str(good_root)})), LAYOUT).backups
    assert backup.kind == "full" and (good_root / backup.artifact.path).is_file()
