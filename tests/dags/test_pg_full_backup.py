"""The full backup DAG, run for real with `airflow dags test`, then restored and compared table by table."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT, airflow_cli, backup_env
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from pgbackup.postgres.target import tools_for_server
from pgbackup.restore.chain import ArchiveRestore
from pgcompare import library_fingerprints
from rclone_provider.client import Rclone, RemoteConfig

pytestmark = pytest.mark.airflow
PASSWORD = "Pw-DISTINCT-7f3a9"  # trust auth accepts it; it must never show up in any output


def run_full_dag(source, remote_extra: dict, local_dir: Path, **extra_env):
    env = backup_env(source, remote_extra, local_dir, password=PASSWORD, **extra_env)
    return subprocess.run([airflow_cli(), "dags", "test", "pg_full_backup"], env=env, capture_output=True, text=True, timeout=300)


def restore_latest_and_compare(remote: RemoteConfig, source, make_database, tmp_path):
    client = Rclone(remote)
    catalog = Catalog.load(client, BackupLayout("database"))
    assert catalog.problems == [] and catalog.orphans == []
    (backup,) = catalog.backups
    assert backup.kind == "full" and backup.database == source.dbname
    assert backup.verified["method"] in ("remote sha256", "download and sha256")
    downloaded = tmp_path / "downloaded.dump.zst"
    client.download(backup.artifact.path, downloaded)
    target = make_database("restored")
    ArchiveRestore(tools_for_server(source.server_version()[0])).run(downloaded, target, expected_uncompressed=backup.uncompressed_bytes, jobs=2)
    assert library_fingerprints(target) == library_fingerprints(source)
    return backup


def test_full_backup_to_a_local_remote_restores_exactly(airflow_home, shop_db, local_remote, make_database, tmp_path):
    local_dir = tmp_path / "local copies"
    result = run_full_dag(shop_db, {"type": "local", "root": local_remote.root}, local_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    backup = restore_latest_and_compare(local_remote, shop_db, make_database, tmp_path)
    assert backup.artifact.path == f"database/full/{backup.id}.dump.zst"
    assert backup.compression["algorithm"] == "zstd" and backup.details["dag_id"] == "pg_full_backup"
    # the local copy and its manifest are kept beside the remote one
    assert (local_dir / backup.artifact.path).is_file()
    assert (local_dir / f"database/full/{backup.id}.manifest.json").is_file()
    # no secret in the run's output or task logs
    logs = result.stdout + result.stderr + "".join(p.read_text(errors="replace") for p in (airflow_home / "logs").rglob("*") if p.is_file())
    assert PASSWORD not in logs
    assert PASSWORD not in (local_dir / f"database/full/{backup.id}.manifest.json").read_text()


def test_full_backup_over_webdav_restores_exactly(airflow_home, shop_db, webdav_server, make_database, tmp_path):
    extra = {"type": "webdav", "url": webdav_server.url, "root": "DamnedDesigns-Backups"}
    result = run_full_dag(shop_db, extra, tmp_path / "local")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    restore_latest_and_compare(RemoteConfig.from_extra("backup_remote", extra), shop_db, make_database, tmp_path)
    assert list((webdav_server.directory / "DamnedDesigns-Backups" / "database" / "full").glob("*.manifest.json"))


def test_unreachable_source_fails_the_run_and_stores_nothing(airflow_home, local_remote, tmp_path, make_database):
    gone = make_database("gone")
    missing = gone.with_database(gone.dbname + "_missing")
    result = run_full_dag(missing, {"type": "local", "root": local_remote.root}, tmp_path / "local")
    assert result.returncode != 0
    assert f'database "{missing.dbname}" does not exist' in result.stdout + result.stderr
    assert Rclone(local_remote).list("", recursive=True) == []
    assert not (tmp_path / "local").exists() or not any(p.is_file() for p in (tmp_path / "local").rglob("*"))


def test_backupctl_full_runs_the_dag_and_reports_where_it_landed(airflow_home, shop_db, local_remote, tmp_path):
    env = backup_env(shop_db, {"type": "local", "root": local_remote.root}, tmp_path / "local")
    result = subprocess.run([sys.executable, str(PROJECT / "bin" / "backupctl"), "full"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (backup,) = Catalog.load(Rclone(local_remote), BackupLayout("database")).backups
    assert f"Full backup {backup.id}" in result.stdout
    assert local_remote.spec(backup.artifact.path) in result.stdout
    listed = subprocess.run([sys.executable, str(PROJECT / "bin" / "backupctl"), "list", "--json"], env=env, capture_output=True, text=True)
    assert [b["id"] for b in json.loads(listed.stdout)] == [backup.id]
