"""The row-key state kept between backups: incrementals maintain it and the fingerprints from the change alone,
and the result must be exactly what a full backup reads from scratch — on the real PostgreSQL."""

import io
from unittest import mock

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

import pgbackup.capture.rowstate as rowstate
from chain_steps import execute, publish, restore, state_file_lines
from pgbackup.capture.rowstate import (
    RowKeyState,
    StateMismatch,
    StateOrderError,
    TableFingerprintSums,
    count_updated,
    encode_cells,
    merge_state,
    split_name,
)
from pgbackup.postgres.fingerprint import table_fingerprints
from pgcompare import database_content
from rowstate_model import draw_changes, model_fingerprint


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
    assert_rows_captured(inc.details["captured"]["public.setting"], upserted=1, deleted=0)
    assert_rows_captured(inc.details["captured"]["public.session"], upserted=0, deleted=7)


def assert_rows_captured(captured: dict, *, upserted: int, deleted: int) -> None:
    """Exactly ``deleted`` deletes and at least ``upserted`` upserts: rows older than the parent may be sent again
    when another session on the server held the parent snapshot's xmin back (harmless, and not this test's point)."""
    assert captured["mode"] == "rows" and captured["deleted"] == deleted and captured["upserted"] >= upserted, captured


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
    assert_rows_captured(inc.details["captured"]["public.setting"], upserted=2, deleted=len(gone))
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
    path = max(RowKeyState(capture.state_root, full.id).bucket_paths("public.payment"), key=lambda p: p.stat().st_size)
    lines = state_file_lines(path)
    path.write_bytes(b"".join(encode_cells(lines[:5] + lines[6:], split_name(path.name)[1])))
    RowKeyState(capture.state_root, full.id).mark_complete()  # the state proves itself, but disagrees with its manifest
    assert RowKeyState(capture.state_root, full.id).damage() is None
    execute(shop_db, "UPDATE payment SET amount = amount + 1 WHERE id = (SELECT min(id) FROM payment)")
    captured = capture.incremental(full)
    assert captured.kind == "full" and "does not add up" in captured.details["promoted_from_incremental"]


def test_an_unsorted_state_is_refused(tmp_path):
    state = RowKeyState(tmp_path, "x")
    state.dir.mkdir()
    state.path("public.t", 0).write_bytes(zstandard.ZstdCompressor().compress(b"0000\t(2)\t" + b"0" * 32 + b"\n0000\t(1)\t" + b"0" * 32 + b"\n"))
    with pytest.raises(StateOrderError, match="not in bytewise key order"):
        state.mark_complete()


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
    from pgbackup.capture.rowstate import _windows

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
        top = max([line[:7] for line in block + changes] or [b""])
        assert all(k <= top for k in keys)


def test_a_bulk_insert_is_merged_in_bounded_windows_and_restores_exactly(shop_db, capture, client, make_database, monkeypatch):
    """Inserts above the parent's last key and between two parent keys, merged seven lines at a time."""
    import pgbackup.capture.rowstate

    monkeypatch.setattr(pgbackup.capture.rowstate, "WINDOW_MAX_CHANGES", 7)
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


# -- the merge on its own: random states and changes against a model of plain sets and dicts -----------

# Printed row texts: ")" only at the end (COPY and ROW()::text quote it inside), so no key is a prefix of another;
# backslashes and bytes above 0x7f, where the bytewise order differs from most collations.
KEY_BYTES = st.sampled_from([b"0", b"1", b"9", b"a", b"Z", b" ", b",", b'"', b"\\", b"\\t", b"\\n", b"\x7f", "ä".encode(), "€".encode()])
KEYS = st.lists(KEY_BYTES, max_size=4).map(lambda parts: b"(" + b"".join(parts) + b")")
OPS = st.sampled_from(["keep", "keep", "update", "delete", "delete and insert again", "delete and insert the same row", "re-sent"])


def line(key, md5):
    return key + b"\t" + md5


def blocks_of(lines, cuts):
    """``lines`` cut into blocks at the (sorted, deduplicated) positions ``cuts``, as a file is read."""
    edges = [0, *sorted({c % (len(lines) + 1) for c in cuts}), len(lines)]
    return [lines[a:b] for a, b in zip(edges, edges[1:]) if b > a]


@st.composite
def changes(draw):
    """A parent state, what happened to each of its rows, new rows: the parent, the current rows and the changed lines."""
    return draw_changes(draw, KEYS, OPS, 40, 40)


def merged(parent, current, changed, parent_cuts, key_cuts, give_keys):
    """Run merge_state on the scenario as the capture would: returns (new state bytes, deleted keys, returned count, sums, parent_seen)."""
    parent_lines = sorted(line(k, h) for k, h in parent.items())
    changed_lines = sorted(line(k, h) for k, h in changed.items())
    deletes = set(parent) - set(current)
    keys = blocks_of(sorted(current), key_cuts) if deletes or give_keys else None
    out, deleted = io.BytesIO(), []
    sums, parent_seen = TableFingerprintSums.parse(model_fingerprint(parent)), TableFingerprintSums()
    count = merge_state(iter(blocks_of(parent_lines, parent_cuts)), iter(changed_lines), keys, out, sums, deleted.extend, parent_seen)
    return out.getvalue(), deleted, count, sums, parent_seen


CUTS = st.lists(st.integers(min_value=0, max_value=80), max_size=6)


@settings(max_examples=400, deadline=None)
@given(scenario=changes(), parent_cuts=CUTS, key_cuts=CUTS, give_keys=st.booleans(), window=st.integers(min_value=1, max_value=5))
def test_the_merged_state_and_deletes_equal_the_model(scenario, parent_cuts, key_cuts, give_keys, window):
    parent, current, changed = scenario
    with mock.patch.object(rowstate, "WINDOW_MAX_CHANGES", window):
        state, deleted, count, sums, parent_seen = merged(parent, current, changed, parent_cuts, key_cuts, give_keys)
    assert state == b"".join(line(k, h) + b"\n" for k, h in sorted(current.items()))
    assert deleted == sorted(set(parent) - set(current)) and count == len(deleted)
    assert sums.to_dict() == model_fingerprint(current)
    assert parent_seen.to_dict() == model_fingerprint(parent)


@settings(max_examples=300, deadline=None)
@given(scenario=changes(), parent_cuts=CUTS, window=st.integers(min_value=1, max_value=5))
def test_count_updated_counts_the_changed_rows_whose_key_was_in_the_parent(scenario, parent_cuts, window):
    parent, _, changed = scenario
    blocks = blocks_of(sorted(line(k, h) for k, h in parent.items()), parent_cuts)
    with mock.patch.object(rowstate, "WINDOW_MAX_CHANGES", window):
        assert count_updated(iter(blocks), iter(sorted(line(k, h) for k, h in changed.items()))) == len(set(changed) & set(parent))


@settings(max_examples=300, deadline=None)
@given(scenario=changes(), parent_cuts=CUTS, key_cuts=CUTS, window=st.integers(min_value=1, max_value=5))
def test_windows_keep_every_key_in_one_window_in_order_and_within_the_bound(scenario, parent_cuts, key_cuts, window):
    from pgbackup.capture.rowstate import _windows

    parent, current, changed = scenario
    parent_lines = sorted(line(k, h) for k, h in parent.items())
    changed_lines = sorted(line(k, h) for k, h in changed.items())
    windows = list(_windows(iter(blocks_of(parent_lines, parent_cuts)), iter(changed_lines), iter(blocks_of(sorted(current), key_cuts)), window))
    assert [x for b, _, _ in windows for x in b] == parent_lines
    assert [x for _, c, _ in windows for x in c] == changed_lines
    assert [x for _, _, k in windows for x in k] == sorted(current)
    assert all(len(c) <= window for _, c, _ in windows)
    key_sets = [{line.split(b"\t")[0] for line in b + c} | set(k) for b, c, k in windows]
    for before, after in zip(key_sets, key_sets[1:]):  # each key's parent line, change and current key meet in one window
        assert not before or not after or max(before) < min(after)


@settings(max_examples=200, deadline=None)
@given(scenario=changes(), stray=KEYS)
def test_a_current_key_neither_in_the_parent_nor_changed_is_a_mismatch(scenario, stray):
    parent, current, changed = scenario
    if stray in parent or stray in changed:
        return
    with pytest.raises(StateMismatch):
        merged(parent, {**current, stray: b"0" * 32}, changed, [], [], True)


@settings(max_examples=200, deadline=None)
@given(scenario=changes())
def test_a_changed_row_missing_from_the_current_keys_is_a_mismatch(scenario):
    parent, current, changed = scenario
    if not changed:
        return
    gone = sorted(changed)[0]
    with pytest.raises(StateMismatch):
        merged(parent, {k: v for k, v in current.items() if k != gone}, changed, [], [], True)
