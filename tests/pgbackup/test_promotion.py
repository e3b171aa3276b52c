"""When an incremental becomes a full: ``promotion_reason`` over synthetic parents and sources, no database.

Each test changes one fact of a parent/source pair that otherwise matches, at the
boundary where the decision flips, and names the reason it expects.
"""

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from factories import SHOP_SOURCE, manifest
from pgbackup.capture.promotion import MAX_XID_DISTANCE, SourceNow, continuity_reason, parse_lsn, promotion_reason
from pgbackup.capture.rowstate import RowKeyState
from pgbackup.postgres.snapshot import SnapshotInfo
from pgbackup.postgres.tables import TableInfo

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)
ITEM = TableInfo("public", "item", ("id",), ("id", "v"), key="public.item", oid=16400, relfilenode=16400)
NO_KEY = TableInfo("public", "log", (), ("line",), key="public.log", oid=16410, relfilenode=16410)
VIEW = TableInfo("public", "totals", (), ("n",), key="public.totals", oid=16420, relfilenode=16421, kind="m")
TABLES = (ITEM, NO_KEY, VIEW)
SETTINGS = {"DateStyle": "ISO, MDY", "extra_float_digits": "3"}
VIEW_FINGERPRINT = {"rows": 1, "sum_high": 5, "sum_low": 6}
ROW_HASH = b"0123456789abcdef0123456789abcdef"


def snapshot(**changes) -> SnapshotInfo:
    values = {"exported_id": "x", "pg_snapshot": "1000:1000:", "xmin": 1000, "xmax": 1000, "taken_at": "t",
              "system_identifier": SHOP_SOURCE.system_identifier, "timeline": 1, "wal_lsn": "0/5000000"}
    return SnapshotInfo(**{**values, **changes})


def parent_manifest(**details):
    parent = manifest("full", NOW)
    recorded = {
        "snapshot": snapshot().to_dict(), "source": SHOP_SOURCE.to_dict(), "settings": dict(SETTINGS),
        "fingerprints": {"public.item": {"rows": 1, "sum_high": 1, "sum_low": 2}, "public.log": {"rows": 0, "sum_high": 0, "sum_low": 0},
                         "public.totals": VIEW_FINGERPRINT},
        "schema_sha256": "schema-of-the-parent", "tables": {t.qualified: t.identity() for t in TABLES},
    }
    return replace(parent, details={**recorded, **details})


def source_now(**changes) -> SourceNow:
    values = {"database": SHOP_SOURCE.database, "identity": SHOP_SOURCE, "snapshot": snapshot(xmin=1100, xmax=1100, wal_lsn="0/5000100"),
              "settings": dict(SETTINGS), "tables": TABLES, "schema_sha256": "schema-of-the-parent",
              "matview_fingerprints": {"public.totals": VIEW_FINGERPRINT}, "large_objects": None}
    return SourceNow(**{**values, **changes})


@pytest.fixture
def parent():
    return parent_manifest()


@pytest.fixture
def state(tmp_path, parent) -> RowKeyState:
    """The parent's complete row-key state: one file, for its one keyed table."""
    written = RowKeyState(tmp_path / "state", parent.id)
    written.write_buckets("public.item", 0, [[b"0001\t(1)\t" + ROW_HASH]])
    written.mark_complete()
    return RowKeyState(tmp_path / "state", parent.id)


def test_nothing_is_promoted_when_parent_state_and_source_agree(parent, state):
    assert promotion_reason(parent, state, source_now()) is None


def test_a_parent_without_snapshot_state_is_promoted(state):
    parent = parent_manifest()
    del parent.details["schema_sha256"]
    assert "records no snapshot state" in promotion_reason(parent, state, source_now())


def test_a_parent_of_manifest_format_1_is_promoted(parent, state):
    assert "made by an older version of pgbackup" in promotion_reason(replace(parent, format_version=1), state, source_now())


def test_a_parent_missing_one_relation_oid_is_promoted(state):
    tables = {t.qualified: t.identity() for t in TABLES}
    del tables["public.log"]["oid"]
    assert "relation OIDs" in promotion_reason(parent_manifest(tables=tables), state, source_now())


def test_a_parent_of_another_database_name_is_promoted(parent, state):
    assert "is a backup of database 'shop', not 'shop2'" in promotion_reason(parent, state, source_now(database="shop2"))


def test_a_parent_of_another_database_oid_is_promoted(parent, state):
    other = replace(SHOP_SOURCE, database_oid=SHOP_SOURCE.database_oid + 1)
    assert promotion_reason(parent, state, source_now(identity=other)).startswith("the source is database 'shop' (oid 16385)")


def test_another_timeline_is_promoted(parent, state):
    reason = promotion_reason(parent, state, source_now(snapshot=snapshot(xmax=1100, timeline=2, wal_lsn="0/5000100")))
    assert "timeline 2, the parent's snapshot was on 1" in reason


def test_an_unreadable_timeline_is_promoted_when_the_parent_recorded_one(parent, state):
    reason = promotion_reason(parent, state, source_now(snapshot=snapshot(xmax=1100, timeline=None, wal_lsn="0/5000100")))
    assert "timeline cannot be read now" in reason


def test_a_wal_position_one_byte_behind_the_parents_is_promoted(parent, state):
    reason = promotion_reason(parent, state, source_now(snapshot=snapshot(xmax=1100, wal_lsn="0/4FFFFFF")))
    assert "WAL position 0/4FFFFFF is behind the parent's 0/5000000" in reason


def test_the_parents_own_wal_position_continues(parent, state):
    assert promotion_reason(parent, state, source_now(snapshot=snapshot(xmax=1100, wal_lsn="0/5000000"))) is None


def test_transaction_ids_one_below_the_parents_xmax_are_promoted(parent, state):
    reason = promotion_reason(parent, state, source_now(snapshot=snapshot(xmin=999, xmax=999, wal_lsn="0/5000100")))
    assert "transaction ids went backwards" in reason


def test_the_parents_own_xmax_continues(parent, state):
    assert promotion_reason(parent, state, source_now(snapshot=snapshot(wal_lsn="0/5000100"))) is None


def test_exactly_max_xid_distance_since_the_parent_continues(parent, state):
    far = snapshot(xmin=1000 + MAX_XID_DISTANCE, xmax=1000 + MAX_XID_DISTANCE, wal_lsn="1/0")
    assert promotion_reason(parent, state, source_now(snapshot=far)) is None


def test_one_transaction_past_max_xid_distance_is_promoted(parent, state):
    far = snapshot(xmin=1001 + MAX_XID_DISTANCE, xmax=1001 + MAX_XID_DISTANCE, wal_lsn="1/0")
    assert f"over {MAX_XID_DISTANCE} transactions" in promotion_reason(parent, state, source_now(snapshot=far))


def test_another_cluster_in_the_snapshot_is_not_a_continuation():
    assert "different PostgreSQL cluster" in continuity_reason(snapshot().to_dict(), snapshot(system_identifier="8", xmax=1100))


def test_wal_positions_compare_as_numbers_across_the_high_word():
    assert parse_lsn("0/FFFFFFFF") < parse_lsn("1/0") and parse_lsn("0/A") > parse_lsn("0/9")


def test_one_changed_rendering_setting_is_promoted(parent, state):
    reason = promotion_reason(parent, state, source_now(settings={**SETTINGS, "extra_float_digits": "2"}))
    assert "rendering settings differ" in reason


def test_a_parent_state_not_on_this_machine_is_promoted(parent, tmp_path):
    reason = promotion_reason(parent, RowKeyState(tmp_path / "elsewhere", parent.id), source_now())
    assert f"row-key state of parent {parent.id} is not on this machine" in reason


def test_a_parent_state_with_one_changed_byte_is_promoted(parent, state):
    path = state.path("public.item", 0)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    assert f"row-key state of parent {parent.id} is damaged: the file of public.item" in promotion_reason(parent, state, source_now())


def test_a_parent_state_of_an_older_format_is_promoted(parent, state):
    (state.dir / "FORMAT").write_text("pgbackup-rowstate-3\n")
    assert "is of an older format" in promotion_reason(parent, state, source_now())


def test_a_parent_state_lacking_a_keyed_table_is_promoted(state):
    other = TableInfo("public", "other", ("id",), ("id",), key="public.other", oid=16430, relfilenode=16430)
    tables = (*TABLES, other)
    parent = parent_manifest(tables={t.qualified: t.identity() for t in tables})
    assert promotion_reason(parent, state, source_now(tables=tables)) == f"the row-key state of parent {parent.id} lacks public.other"


def test_a_relation_re_created_under_the_same_name_is_promoted(parent, state):
    recreated = replace(ITEM, oid=ITEM.oid + 1)
    reason = promotion_reason(parent, state, source_now(tables=(recreated, NO_KEY, VIEW)))
    assert "public.item is not the relation the parent saw (oid 16400 then, 16401 now)" in reason


def test_a_table_become_a_materialized_view_of_the_same_oid_is_promoted(parent, state):
    reason = promotion_reason(parent, state, source_now(tables=(ITEM, replace(NO_KEY, kind="m"), VIEW)))
    assert "public.log is not the relation the parent saw" in reason


def test_a_changed_schema_is_promoted(parent, state):
    assert "the schema changed" in promotion_reason(parent, state, source_now(schema_sha256="another-schema"))


def test_a_refreshed_materialized_view_is_promoted(parent, state):
    refreshed = replace(VIEW, relfilenode=VIEW.relfilenode + 1)
    reason = promotion_reason(parent, state, source_now(tables=(ITEM, NO_KEY, refreshed)))
    assert "materialized view public.totals was refreshed" in reason


def test_a_materialized_view_refreshed_concurrently_is_promoted(parent, state):
    changed = {"public.totals": {**VIEW_FINGERPRINT, "rows": 2}}
    assert "REFRESH ... CONCURRENTLY" in promotion_reason(parent, state, source_now(matview_fingerprints=changed))


def test_a_first_large_object_is_promoted(parent, state):
    reason = promotion_reason(parent, state, source_now(large_objects={"count": 1, "sum_high": 1, "sum_low": 1}))
    assert "the large objects changed" in reason
