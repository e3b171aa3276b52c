"""Catalog and retention against a real rclone remote, through `backupctl retention`."""

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import PROJECT
from factories import manifest
from pgbackup.model.catalog import BrokenChainError, Catalog
from pgbackup.model.layout import BackupLayout
from rclone_provider.client import Rclone

NOW = datetime.now(timezone.utc)
LAYOUT = BackupLayout("database")


def store_backup(client, m, *, with_manifest=True):
    """Write straight into the local remote's directory: quicker than an rclone call per file."""
    root = Path(client.remote.root)
    (root / m.artifact.path).parent.mkdir(parents=True, exist_ok=True)
    (root / m.artifact.path).write_bytes(b"x" * m.artifact.bytes)
    if with_manifest:
        (root / LAYOUT.manifest_path(m.kind, m.id)).write_bytes(m.to_json())


@pytest.fixture
def history(local_remote):
    """Twelve weekly fulls, and a chain of incrementals on the newest and on a 9-week-old full."""
    client = Rclone(local_remote)
    fulls = [manifest("full", NOW - timedelta(weeks=w, hours=1)) for w in range(12)]
    old_chain_inc = manifest("incremental", fulls[9].started_at + timedelta(hours=6), parent=fulls[9])
    recent_inc = manifest("incremental", NOW - timedelta(minutes=30), parent=fulls[0])
    for m in [*fulls, old_chain_inc, recent_inc]:
        store_backup(client, m)
    return client, fulls, old_chain_inc, recent_inc


def run_backupctl(remote, tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKUP_"))}
    env["AIRFLOW_CONN_BACKUP_REMOTE"] = json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": remote.root}})
    env["BACKUP_LOCAL_DIR"] = str(tmp_path / "local")
    return subprocess.run([sys.executable, str(PROJECT / "bin" / "backupctl"), *args], env=env, capture_output=True, text=True)


def test_catalog_lists_committed_backups_and_reports_orphans(history):
    client, fulls, old_inc, recent_inc = history
    orphan = manifest("full", NOW)
    store_backup(client, orphan, with_manifest=False)
    catalog = Catalog.load(client, LAYOUT)
    assert [m.id for m in catalog.backups] == sorted(m.id for m in [*fulls, old_inc, recent_inc])
    assert [o.path for o in catalog.orphans] == [orphan.artifact.path]
    assert catalog.problems == []
    assert [m.id for m in catalog.chain(recent_inc.id)] == [fulls[0].id, recent_inc.id]


def test_catalog_names_a_corrupt_manifest_and_a_missing_object(history):
    client, fulls, _, _ = history
    (Path(client.remote.root) / LAYOUT.manifest_path("full", fulls[3].id)).write_bytes(b'{"format": "pgbackup-manif')
    client.delete(fulls[4].artifact.path)
    catalog = Catalog.load(client, LAYOUT)
    assert any(fulls[3].id in p and "not valid JSON" in p for p in catalog.problems)
    assert any(f"backup {fulls[4].id}: object" in p and "missing" in p for p in catalog.problems)
    assert fulls[3].id not in [m.id for m in catalog.backups]


def test_chain_with_a_missing_link_is_refused(history):
    client, fulls, old_inc, _ = history
    client.delete(LAYOUT.manifest_path("full", fulls[9].id))
    with pytest.raises(BrokenChainError, match=fulls[9].id):
        Catalog.load(client, LAYOUT).chain(old_inc.id)


def test_dry_run_prints_the_plan_and_deletes_nothing(history, local_remote, tmp_path):
    client, fulls, _, _ = history
    before = sorted(o.path for o in client.list("database", recursive=True))
    result = run_backupctl(local_remote, tmp_path, "retention", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"DELETE {fulls[11].id}" in result.stdout and "dry run" in result.stdout
    assert sorted(o.path for o in client.list("database", recursive=True)) == before


def test_prune_deletes_expired_backups_but_keeps_chains_and_newest(history, local_remote, tmp_path):
    client, fulls, old_inc, recent_inc = history
    stale_orphan = Path(local_remote.root) / "database/full/20200101T000000Z-full.dump.zst"
    stale_orphan.write_bytes(b"partial upload")
    os.utime(stale_orphan, (time.time() - 3 * 86400,) * 2)
    result = run_backupctl(local_remote, tmp_path, "retention")
    assert result.returncode == 0, result.stderr
    remaining = {m.id for m in Catalog.load(client, LAYOUT).backups}
    # Fulls are 0..11 weeks and an hour old: 0..7 are within 8 weeks; 8..11 are past it, and the
    # incremental on full 9 is past 7 days, so nothing keeps them.
    assert remaining == {m.id for m in fulls[:8]} | {recent_inc.id}
    assert not stale_orphan.exists()
    stored = {o.path for o in client.list("database", recursive=True)}
    for gone in (fulls[8], fulls[9], fulls[10], fulls[11], old_inc):
        assert gone.artifact.path not in stored and LAYOUT.manifest_path(gone.kind, gone.id) not in stored


def test_list_json_shows_the_catalog(history, local_remote, tmp_path):
    _, fulls, _, recent_inc = history
    result = run_backupctl(local_remote, tmp_path, "list", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed[-1]["id"] == recent_inc.id and listed[-1]["parent"] == fulls[0].id
    assert set(listed[0]) >= {"id", "kind", "started_at", "finished_at", "bytes", "sha256", "parent", "path"}


def test_missing_remote_connection_is_one_clear_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKUP_"))}
    env["AIRFLOW_HOME"] = str(tmp_path / "no-airflow")
    result = subprocess.run([sys.executable, str(PROJECT / "bin" / "backupctl"), "list"], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("backupctl: error: connection 'backup_remote' is not set")


def test_retention_keeps_what_a_running_restore_has_leased(history, local_remote, tmp_path):
    from pgbackup.restore.lease import Lease

    client, fulls, _, _ = history
    with Lease(client, LAYOUT, [fulls[11].id], purpose="restore"):
        result = run_backupctl(local_remote, tmp_path, "retention")
        assert result.returncode == 0, result.stderr
        assert fulls[11].id in {m.id for m in Catalog.load(client, LAYOUT).backups}
        assert f"{fulls[11].id:<32} in use by a running restore" in result.stdout
    run_backupctl(local_remote, tmp_path, "retention")
    assert fulls[11].id not in {m.id for m in Catalog.load(client, LAYOUT).backups}
