"""`backupctl` on a prefix two sources write to, with the source database out of reach (disaster recovery)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from conftest import PROJECT
from factories import SHOP_SOURCE, manifest
from pgbackup.model.identity import SourceIdentity
from pgbackup.model.layout import BackupLayout

LAYOUT = BackupLayout("database")
NOW = datetime.now(timezone.utc)
OTHER = SourceIdentity("7300000000000000002", 16384, "shop", "UTF8", "C", "C")


def store(root: Path, *manifests):
    for m in manifests:
        (root / m.artifact.path).parent.mkdir(parents=True, exist_ok=True)
        (root / m.artifact.path).write_bytes(b"x" * m.artifact.bytes)
        (root / LAYOUT.manifest_path(m.kind, m.id)).write_bytes(m.to_json())


def backupctl(local_remote, tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKUP_"))}
    env.update(
        AIRFLOW_CONN_BACKUP_REMOTE=json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": local_remote.root}}),
        BACKUP_LOCAL_DIR=str(tmp_path / "local"), AIRFLOW_HOME=str(tmp_path / "no-airflow-here"),
    )
    return subprocess.run([sys.executable, str(PROJECT / "bin" / "backupctl"), *args], env=env, capture_output=True, text=True, timeout=300)


def two_sources(local_remote):
    old_mine = manifest("full", NOW - timedelta(weeks=10))
    mine = manifest("full", NOW - timedelta(hours=3))
    theirs = manifest("full", NOW - timedelta(hours=1), source=OTHER)
    store(Path(local_remote.root), old_mine, mine, theirs)
    return old_mine, mine, theirs


def test_list_says_whose_each_backup_is(local_remote, tmp_path):
    old_mine, mine, theirs = two_sources(local_remote)
    listed = backupctl(local_remote, tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    assert "SOURCE" in listed.stdout and "backups of 2 sources are stored here" in listed.stderr
    assert next(line for line in listed.stdout.splitlines() if theirs.id in line).rstrip().endswith(OTHER.key)


def test_without_the_source_restore_and_retention_refuse_and_name_the_sources(local_remote, tmp_path):
    old_mine, mine, theirs = two_sources(local_remote)
    for args in (("restore", "--to", "postgresql://postgres@127.0.0.1:5432/never_made", "--dry-run"), ("retention",)):
        refused = backupctl(local_remote, tmp_path, *args)
        assert refused.returncode == 1
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("backupctl: error: backups of 2 sources are stored under this prefix: ")
        assert SHOP_SOURCE.key in line and OTHER.key in line and "--source-id SYSID/OID" in line
    assert (Path(local_remote.root) / old_mine.artifact.path).exists()


def test_with_source_id_retention_prunes_that_source_only(local_remote, tmp_path):
    old_mine, mine, theirs = two_sources(local_remote)
    pruned = backupctl(local_remote, tmp_path, "retention", "--source-id", SHOP_SOURCE.key)
    assert pruned.returncode == 0, pruned.stderr
    assert f"DELETE {old_mine.id}" in pruned.stdout and theirs.id in pruned.stdout.split("another source writes here", 1)[1]
    assert not (Path(local_remote.root) / old_mine.artifact.path).exists()
    assert (Path(local_remote.root) / theirs.artifact.path).exists() and (Path(local_remote.root) / mine.artifact.path).exists()
    plan = backupctl(local_remote, tmp_path, "restore", "--source-id", OTHER.key, "--to", "postgresql://postgres@127.0.0.1:5432/x", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert f"Restore plan: {theirs.id}" in plan.stdout
