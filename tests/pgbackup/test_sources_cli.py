"""`backupctl` on a prefix two sources write to, with the source database out of reach (disaster recovery)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from commands import backupctl as run_backupctl
from commands import local_remote_env
from factories import SHOP_SOURCE, manifest, store_backups
from pgbackup.model.identity import SourceIdentity

NOW = datetime.now(timezone.utc)
OTHER = SourceIdentity("7300000000000000002", 16384, "shop", "UTF8", "C", "C")


def backupctl(local_remote, tmp_path, *args):
    return run_backupctl(local_remote_env(local_remote.root, tmp_path), *args)


def two_sources(local_remote):
    old_mine = manifest("full", NOW - timedelta(weeks=10))
    mine = manifest("full", NOW - timedelta(hours=3))
    theirs = manifest("full", NOW - timedelta(hours=1), source=OTHER)
    store_backups(Path(local_remote.root), old_mine, mine, theirs)
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
