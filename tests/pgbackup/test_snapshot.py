"""A table truncated or rewritten between the capture's snapshot and its read is refused, never read as empty."""

import pytest

from pgbackup.capture import context as context_module
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.postgres.snapshot import (
    SnapshotSession,
    TableDefinitionChanged,
    TableRewritten,
    hold_table_as_snapshot_sees_it,
)
from pgbackup.postgres.tables import list_tables
from pgbackup.postgres.target import tools_for_server


def execute(target, statement):
    conn = target.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def tables_by_name(session):
    with session.cursor() as cur:
        return {t.name: t for t in list_tables(cur)}


def test_a_truncate_after_the_snapshot_is_caught_an_untouched_table_passes(shop_db):
    session = SnapshotSession(shop_db)
    try:
        tables = tables_by_name(session)
        execute(shop_db, "TRUNCATE payment")  # not MVCC-safe: the snapshot would now see payment empty
        with session.cursor() as cur:
            hold_table_as_snapshot_sees_it(cur, tables["customer"])
            with pytest.raises(TableRewritten, match="table public.payment was truncated or rewritten after the backup's snapshot"):
                hold_table_as_snapshot_sees_it(cur, tables["payment"])
    finally:
        session.close()


def test_once_held_a_table_cannot_be_rewritten_until_the_capture_ends(shop_db):
    session = SnapshotSession(shop_db)
    try:
        tables = tables_by_name(session)
        with session.cursor() as cur:
            hold_table_as_snapshot_sees_it(cur, tables["customer"])
        conn = shop_db.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '300ms'")
            with pytest.raises(Exception, match="lock timeout"):
                cur.execute("ALTER TABLE customer ALTER COLUMN last_name TYPE varchar(300)")
        conn.close()
    finally:
        session.close()


def racing_session(target, statement="TRUNCATE payment"):
    """A capture session after whose snapshot another session runs ``statement`` (on ``payment``) at once."""

    class Racing(SnapshotSession):
        def _take_snapshot(self):
            info = super()._take_snapshot()
            execute(target, statement)
            return info

    return Racing


@pytest.mark.parametrize("kind", ["full", "incremental"])
def test_a_capture_racing_a_truncate_fails_and_keeps_nothing(shop_db, tmp_path, kind, monkeypatch):
    num, version = shop_db.server_version()
    capture = BackupCapture(shop_db, tools_for_server(num), Compression(), local_dir=tmp_path / "local", prefix="database", server_version=version)
    parent = capture.full().manifest(verified_method="test") if kind == "incremental" else None
    monkeypatch.setattr(context_module, "SnapshotSession", racing_session(shop_db))
    with pytest.raises(TableRewritten, match="public.payment"):
        capture.incremental(parent) if kind == "incremental" else capture.full()
    assert not [p for p in (tmp_path / "local" / "database" / kind).rglob("*") if p.is_file()], "a failed capture keeps no object"
    assert not list((tmp_path / "local").rglob("*.partial"))


@pytest.mark.parametrize("kind", ["full", "incremental"])
def test_a_capture_racing_an_added_column_fails_and_keeps_nothing(shop_db, tmp_path, kind, monkeypatch):
    """ADD COLUMN does not rewrite the table: only comparing the snapshot's columns with the current ones catches it."""
    num, version = shop_db.server_version()
    capture = BackupCapture(shop_db, tools_for_server(num), Compression(), local_dir=tmp_path / "local", prefix="database", server_version=version)
    parent = capture.full().manifest(verified_method="test") if kind == "incremental" else None
    monkeypatch.setattr(context_module, "SnapshotSession", racing_session(shop_db, "ALTER TABLE payment ADD COLUMN note text"))
    with pytest.raises(TableDefinitionChanged, match="table public.payment changed its definition .* after the backup's snapshot"):
        capture.incremental(parent) if kind == "incremental" else capture.full()
    assert not [p for p in (tmp_path / "local" / "database" / kind).rglob("*") if p.is_file()], "a failed capture keeps no object"
    assert not list((tmp_path / "local").rglob("*.partial"))


def test_a_dropped_primary_key_after_the_snapshot_is_caught(shop_db):
    session = SnapshotSession(shop_db)
    try:
        tables = tables_by_name(session)
        execute(shop_db, "ALTER TABLE customer DROP CONSTRAINT customer_pkey CASCADE")
        with session.cursor() as cur, pytest.raises(TableDefinitionChanged, match="public.customer"):
            hold_table_as_snapshot_sees_it(cur, tables["customer"])
    finally:
        session.close()


def test_columns_of_domain_and_generated_types_match_their_snapshot_definition(make_database):
    target = make_database("domains")
    execute(target, "CREATE DOMAIN code AS text CHECK (VALUE <> '')")
    execute(target, "CREATE DOMAIN short_code AS code")
    execute(target, "CREATE TABLE t (id int PRIMARY KEY, c short_code, twice int GENERATED ALWAYS AS (id * 2) STORED)")
    session = SnapshotSession(target)
    try:
        with session.cursor() as cur:
            hold_table_as_snapshot_sees_it(cur, tables_by_name(session)["t"])
    finally:
        session.close()
