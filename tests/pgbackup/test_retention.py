"""The retention planner over synthetic catalogs: a pure function, so every rule is checked exactly."""

from datetime import datetime, timedelta, timezone

import pytest

from factories import manifest
from pgbackup.model.layout import BackupLayout
from pgbackup.policy.retention import RetentionPolicy, plan_retention
from pgbackup.storage.store import LocalObject as StoredObject

NOW = datetime(2026, 11, 29, 2, 0, tzinfo=timezone.utc)
POLICY = RetentionPolicy(full_max_age=timedelta(weeks=8), incremental_max_age=timedelta(days=7))


def weekly_fulls(count: int) -> list:
    return [manifest("full", NOW - timedelta(weeks=w)) for w in range(count)]


def decision(plan, backup):
    return next(d for d in plan.decisions if d.backup_id == backup.id)


def test_full_exactly_at_max_age_is_kept():
    at_limit = manifest("full", NOW - timedelta(weeks=8))
    newest = manifest("full", NOW)
    plan = plan_retention([at_limit, newest], POLICY, NOW)
    assert plan.to_delete == []


def test_full_one_second_past_max_age_is_deleted():
    past = manifest("full", NOW - timedelta(weeks=8, seconds=1))
    newest = manifest("full", NOW)
    plan = plan_retention([past, newest], POLICY, NOW)
    assert plan.to_delete == [past.id]
    assert "older than 56.0d" in decision(plan, past).reason


def test_twelve_weekly_fulls_keep_the_last_nine():
    fulls = weekly_fulls(12)
    plan = plan_retention(fulls, POLICY, NOW)
    assert sorted(plan.kept) == sorted(b.id for b in fulls[:9])
    assert sorted(plan.to_delete) == sorted(b.id for b in fulls[9:])


def test_newest_full_is_kept_however_old():
    ancient = manifest("full", NOW - timedelta(days=400))
    plan = plan_retention([ancient], POLICY, NOW)
    assert plan.to_delete == []
    assert "newest" in decision(plan, ancient).reason


def test_min_fulls_keeps_that_many_old_fulls():
    fulls = [manifest("full", NOW - timedelta(days=100 + i)) for i in range(4)]
    fresh = manifest("incremental", NOW - timedelta(hours=1), parent=fulls[0])  # backups still run: the clock is trusted
    plan = plan_retention([*fulls, fresh], RetentionPolicy(timedelta(weeks=8), timedelta(days=7), min_fulls=2), NOW)
    assert sorted(plan.kept) == sorted([fulls[0].id, fulls[1].id, fresh.id])


def test_min_fulls_below_one_is_refused():
    with pytest.raises(ValueError, match="never deletes the newest full"):
        RetentionPolicy(timedelta(weeks=8), timedelta(days=7), min_fulls=0)


def test_expired_full_needed_by_a_kept_incremental_chain_is_kept():
    old_full = manifest("full", NOW - timedelta(weeks=9))
    inc1 = manifest("incremental", NOW - timedelta(days=6), parent=old_full, base=old_full)
    inc2 = manifest("incremental", NOW - timedelta(days=1), parent=inc1, base=old_full)
    newest_full = manifest("full", NOW - timedelta(hours=1))
    plan = plan_retention([old_full, inc1, inc2, newest_full], POLICY, NOW)
    assert plan.to_delete == []
    assert decision(plan, old_full).reason.startswith("needed by kept backup")


def test_expired_incremental_in_the_middle_of_a_kept_chain_is_kept():
    full = manifest("full", NOW - timedelta(days=10))
    inc_old = manifest("incremental", NOW - timedelta(days=9), parent=full, base=full)
    inc_new = manifest("incremental", NOW - timedelta(days=2), parent=inc_old, base=full)
    plan = plan_retention([full, inc_old, inc_new], POLICY, NOW)
    assert plan.to_delete == []
    assert decision(plan, inc_old).reason == f"needed by kept backup {inc_new.id}"


def test_expired_incrementals_and_their_expired_full_go_together():
    old_full = manifest("full", NOW - timedelta(weeks=10))
    old_inc = manifest("incremental", NOW - timedelta(weeks=10) + timedelta(hours=6), parent=old_full, base=old_full)
    newest = manifest("full", NOW)
    plan = plan_retention([old_full, old_inc, newest], POLICY, NOW)
    assert sorted(plan.to_delete) == sorted([old_full.id, old_inc.id])


def test_incremental_age_boundary_is_seven_days():
    full = manifest("full", NOW - timedelta(days=7, hours=6))
    at_limit = manifest("incremental", NOW - timedelta(days=7), parent=full, base=full)
    past = manifest("incremental", NOW - timedelta(days=7, seconds=1), parent=full, base=full)
    plan = plan_retention([full, past, at_limit], POLICY, NOW)
    assert plan.to_delete == [past.id]


def test_orphans_are_deleted_only_after_the_grace_period():
    fresh = StoredObject("database/full/x.dump.zst", 10, (NOW - timedelta(hours=2)).isoformat())
    stale = StoredObject("database/full/y.dump.zst", 10, "2026-11-20T01:02:03.123456789Z")
    unknown = StoredObject("database/full/z.dump.zst", 10, "")
    plan = plan_retention([], POLICY, NOW, orphans=[fresh, stale, unknown])
    assert plan.orphans_to_delete == (stale.path,)


def test_empty_catalog_plans_nothing():
    plan = plan_retention([], POLICY, NOW)
    assert plan.decisions == () and plan.orphans_to_delete == ()


def test_a_leased_backup_is_kept_with_its_chain():
    old_full = manifest("full", NOW - timedelta(weeks=10))
    old_inc = manifest("incremental", NOW - timedelta(weeks=10) + timedelta(hours=6), parent=old_full)
    newest = manifest("full", NOW)
    plan = plan_retention([old_full, old_inc, newest], POLICY, NOW, leased={old_inc.id: "restore"})
    assert plan.to_delete == []
    assert decision(plan, old_inc).reason == "in use by a running restore"
    assert decision(plan, old_full).reason == f"needed by kept backup {old_inc.id}"


def test_leases_live_where_the_layout_says_and_retention_reads_them_there(tmp_path):
    from pgbackup.restore.lease import Lease, leased_backups
    from pgbackup.storage.store import LocalStore

    layout = BackupLayout("shop")
    assert layout.leases_folder() == "shop/leases" and layout.lease_path("abc") == "shop/leases/abc.json"
    store = LocalStore(tmp_path)
    with Lease(store, layout, ["20261129T020000Z-full-aaaaaa"], purpose="drill") as lease:
        assert lease.path.startswith(layout.leases_folder() + "/")
        assert leased_backups(store, layout, NOW) == {"20261129T020000Z-full-aaaaaa": "drill"}
    assert leased_backups(store, layout, NOW) == {}
