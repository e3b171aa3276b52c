"""The row-key state kept between backups: incrementals maintain it and the fingerprints from the change alone,
and the result must be exactly what a full backup reads from scratch — on the real PostgreSQL."""

import pytest
import zstandard
from pgbackup.fingerprint import table_fingerprints
from pgbackup.rowstate import RowKeyState, StateOrderError
from chain_steps import execute, publish, restore
from pgcompare import database_content


def from_scratch(target):
    conn = target.connect()
    try:
        return {t: f.to_dict() for t, f in table_fingerprints(conn).items()}
    finally:
        conn.close()


def state_files(capture, backup_id):
    state = RowKeyState(capture.state_root, backup_id)
    return {p.name: zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes()) for p in sorted(state.dir.glob("*.rows.zst"))}


CHANGES = [
    # inserts only: no parent row can be gone, so the current keys are never read
    "INSERT INTO history_entry (customer_id, order_id, type, is_public, data, created_at) "
    "SELECT customer_id, order_id, type, is_public, data, created_at FROM history_entry ORDER BY id LIMIT 5",
    # updates only
    "UPDATE customer SET last_name = last_name || '!' WHERE id IN (SELECT id FROM customer ORDER BY id LIMIT 4)",
    # deletes, updates and inserts in one table
    "DELETE FROM payment WHERE id IN (SELECT id FROM payment ORDER BY id DESC LIMIT 3)",
    "UPDATE payment SET amount = amount + 1 WHERE id IN (SELECT id FROM payment ORDER BY id LIMIT 2)",
    # a primary key that changes is a delete and an insert
    "UPDATE setting SET key = key || '.renamed' WHERE key = (SELECT min(key) FROM setting)",
    # a row deleted and inserted again under the same key
    "INSERT INTO setting (key, value, revision, updated_at) VALUES ('tmp', '1', 1, now())",
]
CHANGES_2 = [
    "DELETE FROM setting WHERE key = 'tmp'",
    "INSERT INTO setting (key, value, revision, updated_at) VALUES ('tmp', '2', 1, now())",
    "DELETE FROM session WHERE id IN (SELECT id FROM session ORDER BY id LIMIT 7)",
    "DELETE FROM search_index_item WHERE ctid IN (SELECT ctid FROM search_index_item LIMIT 1)",
]


def test_incremental_state_and_fingerprints_equal_what_a_full_reads_from_scratch(shop_db, capture, client):
    parent = publish(capture.full(), client)
    for changes in (CHANGES, CHANGES_2):
        execute(shop_db, *changes)
        inc = capture.incremental(parent)
        assert inc.kind == "incremental"
        assert inc.details["fingerprints"] == from_scratch(shop_db)
        parent = publish(inc, client)
        check = capture.full()  # nothing changed since the incremental: the same rows, read from scratch
        assert check.details["fingerprints"] == inc.details["fingerprints"]
        assert state_files(capture, inc.backup_id) == state_files(capture, check.backup_id)
    assert inc.details["captured"]["public.setting"] == {"mode": "rows", "upserted": 1, "deleted": 0}
    assert inc.details["captured"]["public.session"] == {"mode": "rows", "upserted": 0, "deleted": 7}


TRICKY_KEYS = ["a\nb", "a\tb", "a\\b", "a\rb", "a\bb", "a\x0bb", "a\x0cb", "a\x01b", "aAb", "a b", 'a"b', "a,b", "a(b)", "ä", "", "a", "ab"]


def test_text_keys_that_copy_escapes_merge_in_order(shop_db, capture, client, make_database):
    """Keys holding COPY's escaped characters sort by their printed form: deletes among them are all found."""
    execute(shop_db, *(f"INSERT INTO setting (key, value, revision, updated_at) VALUES ({_literal(k)}, '1', 1, now())" for k in TRICKY_KEYS))
    full = publish(capture.full(), client)
    gone = TRICKY_KEYS[::2]
    execute(shop_db, *(f"DELETE FROM setting WHERE key = {_literal(k)}" for k in gone),
            "UPDATE setting SET value = '2' WHERE key = E'a\\tb'",
            "INSERT INTO setting (key, value, revision, updated_at) VALUES (E'a\\nc', '3', 1, now())")
    inc = publish(capture.incremental(full), client)
    assert inc.kind == "incremental"
    assert inc.details["captured"]["public.setting"] == {"mode": "rows", "upserted": 2, "deleted": len(gone)}
    assert inc.details["fingerprints"] == from_scratch(shop_db)
    assert database_content(restore(client, inc.id, make_database)) == database_content(shop_db)


def _literal(text):
    return "E'" + "".join(f"\\x{ord(c):02x}" if ord(c) < 32 else ("\\\\" if c == "\\" else ("''" if c == "'" else c)) for c in text) + "'"


def test_a_state_of_the_older_format_promotes_to_full(shop_db, capture, client):
    full = publish(capture.full(), client)
    (RowKeyState(capture.state_root, full.id).dir / "FORMAT").unlink()
    captured = capture.incremental(full)
    assert captured.kind == "full" and "older format" in captured.details["promoted_from_incremental"]


def test_a_state_that_does_not_match_its_manifest_promotes_to_full(shop_db, capture, client):
    """A parent state missing a row would hide that row's delete: the merge notices, and a full is taken."""
    full = publish(capture.full(), client)
    path = RowKeyState(capture.state_root, full.id).path("public.payment")
    lines = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes()).splitlines(keepends=True)
    path.write_bytes(zstandard.ZstdCompressor().compress(b"".join(lines[:5] + lines[6:])))
    execute(shop_db, "UPDATE payment SET amount = amount + 1 WHERE id = (SELECT min(id) FROM payment)")
    captured = capture.incremental(full)
    assert captured.kind == "full" and "does not add up" in captured.details["promoted_from_incremental"]


def test_an_unsorted_state_is_refused(tmp_path):
    state = RowKeyState(tmp_path, "x")
    with state.writer("public.t") as out:
        out.write(b"(2)\t" + b"0" * 32 + b"\n(1)\t" + b"0" * 32 + b"\n")
    with pytest.raises(StateOrderError, match="not in bytewise key order"):
        state.fingerprint("public.t")


def test_a_row_updated_then_frozen_is_still_captured(shop_db, capture, client):
    """The derived fingerprints trust xmin; VACUUM FREEZE keeps a row's raw xmin (PostgreSQL ≥ 9.4), so the update still counts."""
    full = publish(capture.full(), client)
    execute(shop_db, "UPDATE customer SET last_name = 'Frozen' WHERE id = (SELECT min(id) FROM customer)")
    conn = shop_db.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM FREEZE customer")
    conn.close()
    inc = capture.incremental(full)
    assert inc.kind == "incremental" and inc.details["captured"]["public.customer"]["upserted"] >= 1
    assert inc.details["fingerprints"] == from_scratch(shop_db)


def test_inheritance_children_keep_their_own_rows(shop_db, capture, client, make_database):
    """A child's rows belong to the child (pg_dump dumps ONLY each table): reading them through the parent broke restores."""
    execute(shop_db, "CREATE TABLE par (id int PRIMARY KEY, v text)", "CREATE TABLE chi (PRIMARY KEY (id)) INHERITS (par)",
            "INSERT INTO par SELECT g, 'p' FROM generate_series(1, 5) g", "INSERT INTO chi SELECT g, 'c' FROM generate_series(1, 5) g")
    full = publish(capture.full(), client)  # the same key in parent and child: once failed the state's order check
    execute(shop_db, "UPDATE chi SET v = 'c2' WHERE id = 1", "DELETE FROM chi WHERE id = 2", "INSERT INTO chi VALUES (6, 'c')")
    inc = publish(capture.incremental(full), client)
    assert inc.kind == "incremental" and inc.details["fingerprints"] == from_scratch(shop_db)
    assert inc.details["fingerprints"]["public.par"]["rows"] == 5
    assert database_content(restore(client, inc.id, make_database)) == database_content(shop_db)


def test_windows_never_hold_more_changes_than_the_bound_and_cover_every_line():
    from pgbackup.rowstate import _windows

    def line(n):
        return f"({n:05d})\t{n:032x}".encode()

    parent = [[line(n) for n in range(0, 100, 10)], [line(n) for n in range(100, 200, 10)]]
    changed = [line(n) for n in range(0, 400, 3)]  # updates, inserts between parent keys, and above the last one
    current = [[line(n)[:7] for n in sorted(set(range(0, 200, 10)) | set(range(0, 400, 3)))]]
    windows = list(_windows(iter(parent), iter(changed), iter(current), max_changes=4))
    assert max(len(c) for _, c, _ in windows) == 4
    assert [x for b, _, _ in windows for x in b] == [x for b in parent for x in b]
    assert [x for _, c, _ in windows for x in c] == changed
    assert [x for _, _, k in windows for x in k] == current[0]
    for block, changes, keys in windows:  # each window's three parts cover the same key range
        top = max([l[:7] for l in block + changes] or [b""])
        assert all(k <= top for k in keys)


def test_a_bulk_insert_is_merged_in_bounded_windows_and_restores_exactly(shop_db, capture, client, make_database, monkeypatch):
    """Inserts above the parent's last key and between two parent keys, merged seven lines at a time."""
    import pgbackup.rowstate

    monkeypatch.setattr(pgbackup.rowstate, "WINDOW_MAX_CHANGES", 7)
    execute(shop_db, "CREATE TABLE bulk (id int PRIMARY KEY, v text)", "INSERT INTO bulk SELECT g * 1000, 'p' FROM generate_series(1, 5) g")
    full = publish(capture.full(), client)
    execute(shop_db, "INSERT INTO bulk SELECT g, 'between' FROM generate_series(1001, 1100) g",
            "INSERT INTO bulk SELECT g, 'above' FROM generate_series(6000, 6150) g",
            "UPDATE bulk SET v = 'u' WHERE id IN (2000, 1050, 6100)", "DELETE FROM bulk WHERE id IN (3000, 1060, 6010)")
    inc = publish(capture.incremental(full), client)
    assert inc.kind == "incremental"
    bulk = inc.details["captured"]["public.bulk"]
    assert bulk["deleted"] == 1 and bulk["upserted"] >= 250  # 249 new rows + 1 update (older rows may be re-sent)
    assert inc.details["fingerprints"] == from_scratch(shop_db)
    assert database_content(restore(client, inc.id, make_database)) == database_content(shop_db)


def test_table_names_with_slashes_and_dots_keep_their_state_inside_its_folder(shop_db, capture, client, make_database):
    """A name holding '/' once failed every full backup; '..' must never write outside the state folder."""
    execute(shop_db, 'CREATE TABLE "a/b" (id int PRIMARY KEY, v text)', 'CREATE TABLE "..up" (id int PRIMARY KEY)',
            'INSERT INTO "a/b" SELECT g, \'x\' FROM generate_series(1, 5) g', 'INSERT INTO "..up" VALUES (1), (2)')
    full = publish(capture.full(), client)
    state = RowKeyState(capture.state_root, full.id)
    assert {p.parent for p in state.dir.rglob("*.rows.zst")} == {state.dir}
    execute(shop_db, 'DELETE FROM "a/b" WHERE id = 2', 'DELETE FROM "..up" WHERE id = 1')
    inc = publish(capture.incremental(full), client)
    assert inc.kind == "incremental" and inc.details["captured"]['public."a/b"']["deleted"] == 1
    assert database_content(restore(client, inc.id, make_database)) == database_content(shop_db)
