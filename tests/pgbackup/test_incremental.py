"""Incremental backups against the real PostgreSQL: full → changes → incremental → changes → incremental,
then a restore at each point must equal the database as it was at that point, table by table."""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chain_steps import execute, publish, restore
from conftest import admin_connection
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from pgbackup.model.manifest import parse_utc
from pgbackup.postgres.fingerprint import table_fingerprint
from pgbackup.postgres.target import tools_for_server
from pgbackup.restore.chain import ChainRestore, RestoreError, choose_chain
from pgcompare import database_content
from sample_shop import mutate_sample_shop

LAYOUT = BackupLayout("database")
log = logging.getLogger("test")


def mutate(target, fraction, seed):
    conn = target.connect()
    mutate_sample_shop(conn, fraction, seed)
    conn.close()


def test_restore_at_every_point_of_a_chain_is_exact(shop_db, capture, client, make_database):
    points = []
    full = publish(capture.full(), client)
    points.append((full, database_content(shop_db)))
    parent = full
    for seed in (1, 2):
        mutate(shop_db, 0.05, seed)
        execute(
            shop_db,
            f"DELETE FROM search_index_item WHERE ctid IN (SELECT ctid FROM search_index_item LIMIT {seed})",
            f"UPDATE asset SET preview = decode('00ff10{seed:02d}', 'hex') WHERE id = {seed}",
            "SELECT nextval(pg_get_serial_sequence('job_record', 'id'))",
        )
        captured = capture.incremental(parent)
        assert captured.kind == "incremental" and captured.parent_id == parent.id and captured.base_full_id == full.id
        parent = publish(captured, client)
        points.append((parent, database_content(shop_db)))
    for manifest, expected in points:
        restored = restore(client, manifest.id, make_database, jobs=2)
        assert database_content(restored) == expected, f"restore at {manifest.id} differs"


def test_incremental_stores_changed_rows_not_tables(shop_db, capture, client):
    full = publish(capture.full(), client)
    execute(shop_db, "UPDATE customer SET last_name = last_name || ' (moved)' WHERE id IN (SELECT id FROM customer ORDER BY id LIMIT 3)")
    captured = capture.incremental(full)
    tables = captured.details["captured"]
    assert tables["public.customer"] == {"mode": "rows", "upserted": 3, "deleted": 0}
    assert all(info["mode"] == "unchanged" for name, info in tables.items() if name != "public.customer")
    assert captured.uncompressed_bytes < 10_000 < full.uncompressed_bytes


def test_a_changed_table_is_read_once_for_its_state_lines_and_its_upserts(shop_db, capture, client, monkeypatch):
    """One ``COPY`` with the changed-rows filter per changed table, none for an unchanged one (its rows are counted, not read):
    the upserts are the rows the merge read, not a second scan."""
    import psycopg2.extensions

    from pgbackup.postgres.snapshot import SnapshotSession

    statements = []

    class Recording(psycopg2.extensions.cursor):
        def copy_expert(self, sql, file, *args, **kwargs):
            statements.append(sql)
            return super().copy_expert(sql, file, *args, **kwargs)

    monkeypatch.setattr(SnapshotSession, "cursor", lambda self, name=None: self.conn.cursor(cursor_factory=Recording))
    full = publish(capture.full(), client)
    statements.clear()
    execute(shop_db, "UPDATE customer SET last_name = last_name || ' (moved)' WHERE id IN (SELECT id FROM customer ORDER BY id LIMIT 3)")
    captured = capture.incremental(full)
    assert captured.details["captured"]["public.customer"] == {"mode": "rows", "upserted": 3, "deleted": 0}
    filtered = [s for s in statements if "age(t.xmin)" in s]
    assert len(filtered) == 1 and '"public"."customer" AS t' in filtered[0], filtered  # no COPY of an unchanged table's


def test_table_without_primary_key_is_copied_whole_and_said_so(shop_db, capture, client):
    full = publish(capture.full(), client)
    execute(shop_db, "DELETE FROM search_index_item WHERE ctid IN (SELECT ctid FROM search_index_item LIMIT 1)")
    captured = capture.incremental(full)
    assert captured.details["captured"]["public.search_index_item"]["mode"] == "whole table"
    assert captured.details["captured"]["public.search_index_item"]["reason"] == "no primary key"
    # Its fingerprint is summed from the same read as its rows: it must be the one a full reads.
    conn = shop_db.connect()
    try:
        with conn.cursor() as cur:
            assert captured.details["fingerprints"]["public.search_index_item"] == table_fingerprint(cur, "public", "search_index_item").to_dict()
    finally:
        conn.close()


def test_the_whole_table_writer_passes_the_rows_on_and_sums_their_hashes_across_any_cut():
    """COPY hands over chunks cut anywhere; a table of no columns prints empty rows (the line is the hash alone)."""
    import io

    from pgbackup.capture.incremental import _HashedRows
    from pgbackup.capture.rowstate import StateMismatch, TableFingerprintSums

    hashes = [b"%032x" % (n * 7919 + 1) for n in range(5)]
    for rows in ([b"a\tb", b"", b"\\N\tc", b"x", b"y"], [b""] * 5):
        printed = b"".join((row + b"\t" if row or rows[0] else b"") + digest + b"\n" for row, digest in zip(rows, hashes))
        for cut in range(1, len(printed), 7):
            out = io.BytesIO()
            writer = _HashedRows(out)
            writer.write(printed[:cut])
            writer.write(printed[cut:])
            writer.close()
            expected = TableFingerprintSums()
            expected.add(hashes)
            assert out.getvalue() == b"".join(row + b"\n" for row in rows) and writer.sums.to_dict() == expected.to_dict()
    many = [b"row %d\t" % n + b"%032x" % n for n in range(60_000)]  # over CHUNK: handled as it comes, not at the end
    printed, out = b"".join(line + b"\n" for line in many), io.BytesIO()
    writer = _HashedRows(out)
    for at in range(0, len(printed), 999):
        writer.write(printed[at : at + 999])
    flushed_early = out.tell() > 0
    writer.close()
    expected = TableFingerprintSums()
    expected.add(many)
    assert flushed_early and out.getvalue() == b"".join(line[:-33] + b"\n" for line in many) and writer.sums.to_dict() == expected.to_dict()
    writer = _HashedRows(io.BytesIO())
    writer.write(b"a\t" + hashes[0])
    with pytest.raises(StateMismatch):
        writer.close()


def test_schema_change_promotes_to_full_and_both_points_restore_exactly(shop_db, capture, client, make_database):
    full = publish(capture.full(), client)
    mutate(shop_db, 0.02, 5)
    inc = publish(capture.incremental(full), client)
    before = database_content(shop_db)
    execute(shop_db, "ALTER TABLE customer ADD COLUMN loyalty_points integer NOT NULL DEFAULT 7", "CREATE INDEX ON payment (amount)")
    mutate(shop_db, 0.02, 6)
    promoted = capture.incremental(inc)
    assert promoted.kind == "full"
    assert "schema changed" in promoted.details["promoted_from_incremental"]
    promoted = publish(promoted, client)
    after = database_content(shop_db)
    assert database_content(restore(client, inc.id, make_database)) == before
    assert database_content(restore(client, promoted.id, make_database)) == after


def test_no_parent_takes_a_full_backup(capture):
    captured = capture.incremental(None)
    assert captured.kind == "full" and captured.details["promoted_from_incremental"] == "no full backup exists yet"


def test_missing_row_key_state_promotes_to_full(shop_db, capture, client, tmp_path):
    import shutil

    full = publish(capture.full(), client)
    shutil.rmtree(tmp_path / "local" / "state")
    captured = capture.incremental(full)
    assert captured.kind == "full" and "row-key state" in captured.details["promoted_from_incremental"]


NEW_CUSTOMER = (
    "INSERT INTO customer (first_name, last_name, email_address, verified, created_at, updated_at) "
    "VALUES ('{name}', 'Test', '{name}@example.com', true, now(), now())"
)


def test_a_missing_key_file_in_the_parent_state_promotes_to_full(shop_db, capture, client, tmp_path):
    full = publish(capture.full(), client)
    next((tmp_path / "local" / "state").rglob("public.payment+*.rows.zst")).unlink()
    captured = capture.incremental(full)
    assert captured.kind == "full" and "lacks public.payment" in captured.details["promoted_from_incremental"]


def test_application_can_insert_with_default_ids_after_restore(shop_db, capture, client, make_database):
    full = publish(capture.full(), client)
    execute(shop_db, NEW_CUSTOMER.format(name="Ada"))
    inc = publish(capture.incremental(full), client)
    restored = restore(client, inc.id, make_database)
    execute(restored, NEW_CUSTOMER.format(name="Grace"),
            "INSERT INTO job_record (queue_name, data, state, progress, retries, created_at) VALUES ($$q$$, $${}$$, $$done$$, 0, 0, now())")


def test_writes_during_the_incremental_give_a_consistent_state(shop_db, capture, client, make_database):
    """Payments and their orders are written together while the capture runs: the restore must hold whole pairs."""
    full = publish(capture.full(), client)
    stop = threading.Event()

    def writer():
        conn = shop_db.connect()
        with conn.cursor() as cur:
            cur.execute("SELECT min(order_id) FROM payment")
            order_id = cur.fetchone()[0]
            while not stop.is_set():
                cur.execute('UPDATE "order" SET total = total + 1 WHERE id = %s', (order_id,))
                cur.execute("UPDATE payment SET amount = amount + 1 WHERE order_id = %s", (order_id,))
                conn.commit()
        conn.close()

    before = _order_payment_gap(shop_db)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        inc = publish(capture.incremental(full), client)
    finally:
        stop.set()
        thread.join()
    restored = restore(client, inc.id, make_database)
    assert _order_payment_gap(restored) == before


def _order_payment_gap(target):
    conn = target.connect()
    with conn.cursor() as cur:
        cur.execute('SELECT o.total - sum(p.amount) FROM "order" o JOIN payment p ON p.order_id = o.id '
                    'WHERE o.id = (SELECT min(order_id) FROM payment) GROUP BY o.total')
        gap = cur.fetchone()
    conn.close()
    return gap


def test_corrupt_object_is_refused_before_the_target_is_touched(shop_db, capture, client, make_database, local_remote):
    from pathlib import Path

    full = publish(capture.full(), client)
    mutate(shop_db, 0.01, 9)
    inc = publish(capture.incremental(full), client)
    stored = Path(local_remote.root) / inc.artifact.path
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x40
    stored.write_bytes(bytes(data))
    target = make_database("untouched")
    with pytest.raises(RestoreError, match=f"backup {inc.id}: .* is corrupt"):
        ChainRestore(client, LAYOUT).run(choose_chain(Catalog.load(client, LAYOUT), backup_id=inc.id), target)
    assert database_content(target) == {"<sequences>": []}


def test_missing_link_in_the_chain_is_named(shop_db, capture, client, local_remote):
    from pathlib import Path

    full = publish(capture.full(), client)
    mutate(shop_db, 0.01, 3)
    inc1 = publish(capture.incremental(full), client)
    mutate(shop_db, 0.01, 4)
    inc2 = publish(capture.incremental(inc1), client)
    (Path(local_remote.root) / inc1.artifact.path).unlink()
    with pytest.raises(RestoreError, match=f"needs {inc1.id}"):
        choose_chain(Catalog.load(client, LAYOUT), backup_id=inc2.id)


def waiting_backends(dbname: str, condition: str) -> int:
    """Sessions of ``dbname`` matching ``condition`` (SQL over pg_stat_activity ``a``), as the server sees them now."""
    conn = admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM pg_catalog.pg_stat_activity a WHERE a.datname = %s AND {condition}", (dbname,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def wait_until(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f}s"
        time.sleep(0.05)


PG_DUMP_WAITING_FOR_A_LOCK = "a.application_name = 'pg_dump' AND a.wait_event_type = 'Lock'"
# A capture session that has asked for the capture lock and does not hold it: it is in SnapshotSession's wait loop.
WAITING_FOR_THE_CAPTURE_LOCK = (
    "a.application_name = 'pgbackup capture' AND a.query LIKE '%%pg_try_advisory_lock%%' AND NOT EXISTS "
    "(SELECT 1 FROM pg_catalog.pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)"
)


def test_full_and_incremental_started_together_capture_one_after_the_other(shop_db, capture, client):
    """Two workers' captures of one database: the capture lock makes the incremental wait for the full's session to
    end, and its snapshot is taken after the full finished."""
    parent = publish(capture.full(), client)
    num, version = shop_db.server_version()
    other_worker = BackupCapture(shop_db, tools_for_server(num), Compression(), local_dir=capture.local_dir, prefix="database",
                                 server_version=version)
    blocker = shop_db.connect()
    blocker.cursor().execute('LOCK TABLE "order" IN ACCESS EXCLUSIVE MODE')  # holds the full's pg_dump until released
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        full_run = pool.submit(capture.full)
        wait_until(lambda: waiting_backends(shop_db.dbname, PG_DUMP_WAITING_FOR_A_LOCK), "the full's pg_dump waiting for order")
        incremental_run = pool.submit(other_worker.incremental, parent)
        wait_until(lambda: waiting_backends(shop_db.dbname, WAITING_FOR_THE_CAPTURE_LOCK), "the incremental waiting for the capture lock")
        assert not incremental_run.done(), "the incremental must wait for the full's capture"
        assert waiting_backends(shop_db.dbname, PG_DUMP_WAITING_FOR_A_LOCK) == 1, "one pg_dump only: the incremental started none"
    finally:
        blocker.rollback()
        blocker.close()
        pool.shutdown(wait=True)
    full, incremental = full_run.result(), incremental_run.result()
    assert full.kind == "full" and incremental.kind == "incremental"
    assert parse_utc(incremental.details["snapshot"]["taken_at"]) >= parse_utc(full.finished_at)


def test_a_chain_whose_ids_sort_before_their_parents_keeps_building_incrementals(shop_db, capture, client, make_database, monkeypatch):
    """Ids need not sort by time (another installation's clock, a random suffix): parents are found by id, states kept by age."""
    from pgbackup.capture import context as context_module

    years = iter(range(2090, 2000, -1))
    monkeypatch.setattr(context_module, "new_backup_id", lambda kind, at: f"{next(years)}0101T000000Z-{kind}")
    parent = publish(capture.full(), client)
    for seed in range(1, 6):  # more than the few newest states kept
        mutate(shop_db, 0.01, seed)
        captured = capture.incremental(parent)
        assert captured.kind == "incremental", captured.details.get("promoted_from_incremental")
        parent = publish(captured, client)
    assert database_content(restore(client, parent.id, make_database)) == database_content(shop_db)
