"""Time that cannot be trusted is not trusted: retention, staleness and chain order when a clock is wrong.

Pure planner tests with a ``now`` argument (the honest level for "what would this decide at time T"), and
`backupctl` run under `faketime` (this process only; the machine's clock is never changed).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path

from commands import backupctl, local_remote_env
from factories import SHOP_SOURCE, manifest, store_backups
from pgbackup.model.catalog import Catalog, chain_order
from pgbackup.model.layout import BackupLayout
from pgbackup.policy.retention import RetentionPolicy, plan_retention
from pgbackup.policy.staleness import staleness_warnings
from rclone_provider.client import Rclone

NOW = datetime(2026, 11, 29, 2, 0, tzinfo=timezone.utc)
POLICY = RetentionPolicy(full_max_age=timedelta(weeks=8), incremental_max_age=timedelta(days=7))
LAYOUT = BackupLayout("database")


def at_snapshot(m, xmax: int):
    """``m`` as the capture records it: with its snapshot's 64-bit xmax."""
    snapshot = {"pg_snapshot": f"{xmax}:{xmax}:", "xmin": xmax, "xmax": xmax, "taken_at": m.to_dict()["started_at"],
                "system_identifier": SHOP_SOURCE.system_identifier}
    return dataclasses.replace(m, details={**m.details, "snapshot": snapshot})


def weekly_history():
    fulls = [manifest("full", NOW - timedelta(weeks=w, hours=1)) for w in range(12)]
    return [*fulls, manifest("incremental", NOW - timedelta(minutes=30), parent=fulls[0])]


def test_a_backup_finished_in_the_future_stops_every_deletion():
    history = weekly_history()
    assert plan_retention(history, POLICY, NOW).to_delete  # the same history prunes at a trusted time
    ahead = manifest("full", NOW + timedelta(days=30))
    plan = plan_retention([*history, ahead], POLICY, NOW)
    assert plan.to_delete == [] and plan.orphans_to_delete == ()
    (warning,) = plan.warnings
    assert f"backup {ahead.id} finished at" in warning and "after now" in warning and "nothing is deleted" in warning


def test_a_clock_a_year_ahead_deletes_nothing_and_says_why():
    history = weekly_history()
    plan = plan_retention(history, POLICY, NOW + timedelta(days=365))
    assert plan.to_delete == []
    assert "backups stopped or the clock jumped ahead" in plan.warnings[0]
    old = next(d for d in plan.decisions if d.backup_id == history[11].id)
    assert old.keep and old.reason.endswith("but kept: the clock cannot be trusted")


def test_an_orphan_a_kept_chain_names_is_kept_after_its_grace():
    from rclone_provider.client import StoredObject

    full = manifest("full", NOW - timedelta(days=3))
    middle = manifest("incremental", NOW - timedelta(days=2), parent=full)
    tip = manifest("incremental", NOW - timedelta(days=1), parent=middle, base=full)
    lost_manifest = StoredObject(middle.artifact.path, 100, (NOW - timedelta(days=2)).isoformat())
    stranger = StoredObject("database/full/20261101T000000Z-full-abcdef.dump.zst", 100, (NOW - timedelta(days=2)).isoformat())
    plan = plan_retention([full, tip], POLICY, NOW, orphans=[lost_manifest, stranger])
    assert plan.orphans_to_delete == (stranger.path,)
    assert plan.orphans_kept == ((middle.artifact.path, f"kept backup {tip.id} needs it (its manifest is missing)"),)


def test_chain_order_follows_the_snapshots_not_a_clock_that_jumped():
    """The clock ran a year ahead for one full, then was set right: the backups taken after it are still newer."""
    full = at_snapshot(manifest("full", NOW), 1000)
    ahead = at_snapshot(manifest("full", NOW + timedelta(days=365)), 2000)
    after = at_snapshot(manifest("incremental", NOW + timedelta(days=1), parent=ahead), 3000)
    later = at_snapshot(manifest("incremental", NOW + timedelta(days=2), parent=after, base=ahead), 4000)
    ordered = chain_order([later, ahead, full, after])
    assert [m.id for m in ordered] == [full.id, ahead.id, after.id, later.id]
    catalog = Catalog(backups=ordered)
    assert catalog.incremental_parent() == (later, None)
    assert [m.id for m in catalog.chain(catalog.backups[-1].id)] == [ahead.id, after.id, later.id]
    # and staleness judges the tip, not the backup stamped a year ahead
    warnings = staleness_warnings(ordered, NOW + timedelta(days=10), timedelta(hours=6), timedelta(hours=1), timedelta(days=400))
    assert any(f"backup {ahead.id} finished in the future" in w and "the clock is wrong" in w for w in warnings)
    assert any(w.startswith("no successful backup since") and later.id in w for w in warnings)


def backupctl_at(local_remote, tmp_path, offset: str, *args):
    """``backupctl`` with its clock moved by ``offset`` (faketime's "+2d", "-1d", ...), this process only."""
    return backupctl(local_remote_env(local_remote.root, tmp_path), *args, clock=offset)


def fresh_history(local_remote):
    now = datetime.now(timezone.utc)
    fulls = [manifest("full", now - timedelta(weeks=w, hours=1)) for w in range(10)]
    recent = manifest("incremental", now - timedelta(minutes=30), parent=fulls[0])
    store_backups(Path(local_remote.root), *fulls, recent)
    return fulls, recent


def test_retention_with_the_clock_a_year_ahead_deletes_nothing_and_warns(local_remote, tmp_path):
    fulls, recent = fresh_history(local_remote)
    result = backupctl_at(local_remote, tmp_path, "+365d", "retention")
    assert result.returncode == 0, result.stderr
    assert "RETENTION REFUSED" in result.stdout and "the clock jumped ahead" in result.stdout
    assert {m.id for m in Catalog.load(Rclone(local_remote), LAYOUT).backups} == {m.id for m in [*fulls, recent]}


def test_retention_with_the_clock_behind_the_newest_backup_deletes_nothing(local_remote, tmp_path):
    fulls, recent = fresh_history(local_remote)
    result = backupctl_at(local_remote, tmp_path, "-1d", "retention")
    assert "RETENTION REFUSED" in result.stdout and f"backup {recent.id} finished at" in result.stdout
    assert {m.id for m in Catalog.load(Rclone(local_remote), LAYOUT).backups} == {m.id for m in [*fulls, recent]}


def test_status_two_and_thirty_days_later_warns_and_a_clock_behind_is_named(local_remote, tmp_path):
    fresh_history(local_remote)
    assert backupctl_at(local_remote, tmp_path, "+0", "status").returncode == 0
    two_days = backupctl_at(local_remote, tmp_path, "+2d", "status")
    assert two_days.returncode == 2 and "no successful backup since" in two_days.stdout
    thirty = backupctl_at(local_remote, tmp_path, "+30d", "status")
    assert thirty.returncode == 2 and "no full backup for more than 8d" in thirty.stdout
    behind = backupctl_at(local_remote, tmp_path, "-1d", "status")
    assert behind.returncode == 2 and "finished in the future" in behind.stdout and "the clock is wrong" in behind.stdout
