"""The bucketed row-key state: a stable bucket and cell function, the count algebra that picks the cells an incremental
compares, and the per-bucket merge — against a model of plain dicts, and on the real PostgreSQL."""

import contextlib
import hashlib
import os
import tempfile
from collections import Counter
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg2 import sql

from chain_steps import execute, publish, restore
from pgbackup.capture import rowstate
from pgbackup.capture.rowstate import (
    CELL_BITS,
    MAX_BITS,
    RowKeyState,
    StateMismatch,
    TableListing,
    bits_for,
    bucket_function,
    bucket_of,
    bucket_of_printed,
    bucket_sql,
    cell_counts_query,
    cell_label,
    cell_of,
    cell_of_printed,
    cell_sql,
    copy_unescape,
    deleted_by_cell,
    keys_query,
    merge_change,
    printed_key_order,
    rows_query,
)
from pgbackup.postgres.tables import TableInfo, list_tables
from pgcompare import database_content
from rowstate_model import draw_changes, model_fingerprint

# -- the bucket function -------------------------------------------------------------------------


def test_the_bucket_function_is_the_top_bits_of_the_key_text_s_md5_and_never_changes():
    """States outlive versions: a bucket function that moved would put every key in another bucket's file."""
    assert [bucket_of(b"(42)", bits) for bits in (0, 1, 4, 12)] == [0, 27017 >> 15, 27017 >> 12, 27017 >> 4]
    assert bucket_of(b'("a b")', 12) == 16298 >> 4 and bucket_of(b"(7,x)", 16) == 50807
    assert all(int.from_bytes(hashlib.md5(key).digest()[:2], "big") >> (16 - 9) == bucket_of(key, 9) for key in (b"", b"(1)", "ä".encode()))
    # A cell is its bucket and the next 4 bits of the same md5: a bucket's cells are 16 consecutive numbers.
    assert [cell_of(b"(42)", bits) for bits in (0, 1, 4, 12)] == [27017 >> 12, 27017 >> 11, 27017 >> 8, 27017]
    assert all(cell_of(key, bits) >> CELL_BITS == bucket_of(key, bits) for key in (b"", b"(1)", b"(7,x)") for bits in range(MAX_BITS + 1))


TRICKY = ["a\nb", "a\tb", "a\\b", "a\rb", "a\bb", "a\x0bb", "a\x0cb", "a\x01b", "aAb", "a b", 'a"b', "a,b", "a(b)", "ä", "", "€x", "a" * 300]


def test_the_server_and_python_put_every_key_in_the_same_bucket(make_database):
    """The server labels the lines; Python's function (on the unescaped printed key) must agree, for every width."""
    db = make_database("buckets")
    execute(db, "CREATE TABLE k (s text, n bigint, PRIMARY KEY (s, n))",
            *(f"INSERT INTO k VALUES ({_literal(text)}, {n})" for n, text in enumerate(TRICKY)),
            "INSERT INTO k SELECT 'n' || g, g FROM generate_series(1, 300) g")
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            for bits in (0, 1, 7, MAX_BITS):
                query = sql.SQL("SELECT {k}, {b}, {c} FROM k AS t ORDER BY {o}").format(
                    k=sql.SQL("ROW(t.s, t.n)::text"), b=bucket_sql(sql.SQL("ROW(t.s, t.n)::text"), bits),
                    c=cell_sql(sql.SQL("ROW(t.s, t.n)::text"), bits), o=printed_key_order(sql.SQL("ROW(t.s, t.n)::text")))
                cur.execute(query)
                for text, bucket, cell in cur.fetchall():
                    assert (bucket, cell) == (bucket_of(text.encode(), bits), cell_of(text.encode(), bits)), (text, bits)
                printed = _copy_out(cur, sql.SQL("COPY (SELECT ROW(t.s, t.n)::text FROM k AS t) TO STDOUT"))
                cur.execute("SELECT ROW(t.s, t.n)::text FROM k AS t")
                assert sorted(copy_unescape(line) for line in printed) == sorted(row[0].encode() for row in cur.fetchall())
    finally:
        conn.close()


def _copy_out(cur, query):
    import io

    out = io.BytesIO()
    cur.copy_expert(query.as_string(cur), out)
    return out.getvalue().split(b"\n")[:-1]


def _literal(text):
    return "E'" + "".join(f"\\x{ord(c):02x}" if ord(c) < 32 else ("\\\\" if c == "\\" else ("''" if c == "'" else c)) for c in text) + "'"


@given(st.text())
def test_copy_unescape_inverts_copy_s_text_escapes(text):
    printed = text
    for raw, escaped in rowstate._COPY_ESCAPES:
        printed = printed.replace(raw, escaped)
    assert copy_unescape(printed.encode()) == text.encode()


def test_bits_give_a_few_thousand_rows_a_bucket_and_at_most_4096_buckets():
    assert [bits_for(n) for n in (-1, 0, 4095, 4096, 8192, 100_000, 10**6, 10**9)] == [0, 0, 0, 1, 2, 6, 9, MAX_BITS]


def test_an_integer_key_s_bucket_is_its_low_bits_and_any_other_key_s_the_md5_of_its_text():
    def table(key_type, keys=("id",)):
        return TableInfo("public", "t", keys, ("id", "v"), "", 1, 1, "r", True, 1, (f"id::{key_type}", "v::25"))

    assert [bucket_function(table(t)) for t in ("20", "21", "23", "25", "1700")] == ["int", "int", "int", "md5", "md5"]
    assert bucket_function(table("23", ("id", "v"))) == "md5"
    assert [bucket_of_printed(k, 4, "int") for k in (b"(42)", b"(-1)", b"(0)", b"(9223372036854775807)")] == [10, 15, 0, 15]
    assert bucket_of_printed(b'("a\\tb")', 12, "md5") == bucket_of(b'("a\tb")', 12)
    # An integer key's cell in its bucket: the 4 bits above the bucket's (42 = 0b10_1010: bucket 0b1010, then 0b10).
    assert [cell_of_printed(k, 4, "int") for k in (b"(42)", b"(-1)", b"(0)", b"(16)")] == [0xA2, 0xFF, 0x00, 0x01]
    assert cell_of_printed(b'("a\\tb")', 12, "md5") == cell_of(b'("a\tb")', 12)


def test_the_server_s_bucket_labels_are_python_s_for_both_functions(make_database):
    """What the server writes before every line (rows_query, keys_query) and counts (cell_counts_query) is cell_of_printed."""
    db = make_database("labels")
    execute(db, "CREATE DOMAIN small AS int2", "CREATE TABLE i (id small PRIMARY KEY)", "CREATE TABLE b (id int8 PRIMARY KEY)",
            "CREATE TABLE s (id text PRIMARY KEY)",
            "INSERT INTO i SELECT g FROM generate_series(-300, 300) g",
            "INSERT INTO b SELECT g * 1000003 FROM generate_series(-500, 500) g UNION SELECT 9223372036854775807",
            *(f"INSERT INTO s VALUES ({_literal(text)})" for text in TRICKY), "INSERT INTO s SELECT 'n' || g FROM generate_series(1, 300) g")
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            for info in [t for t in list_tables(cur) if t.name in ("i", "b", "s")]:
                function = bucket_function(info)
                assert function == ("md5" if info.name == "s" else "int")
                for bits in (0, 3, MAX_BITS):
                    lines = _copy_out(cur, rows_query(info, bits))
                    expected = sorted(cell_label(cell_of_printed(line.split(b"\t")[1], bits, function)) + b"\t" + line.split(b"\t")[1]
                                      for line in lines)
                    assert [line.rsplit(b"\t", 1)[0] for line in lines] == expected, (info.name, bits)
                    cur.execute(cell_counts_query(info, bits))
                    assert dict(cur.fetchall()) == dict(Counter(int(line[:4], 16) for line in lines))
                    some = sorted({int(line[:4], 16) for line in lines})[::3]
                    assert _copy_out(cur, keys_query(info, bits, some)) == [e for e in expected if int(e[:4], 16) in some]
                    every = range(1 << (bits + CELL_BITS))
                    assert _copy_out(cur, keys_query(info, bits, every)) == expected
    finally:
        conn.close()


# -- the count algebra and the merge against a model --------------------------------------------------------

KEY_BYTES = st.sampled_from([b"0", b"1", b"9", b"a", b"Z", b" ", b",", b'"', b"\\\\", b"\\t", b"\\n", b"\x7f", "ä".encode()])
KEYS = st.lists(KEY_BYTES, max_size=4).map(lambda parts: b"(" + b"".join(parts) + b")")
OPS = st.sampled_from(["keep", "keep", "keep", "update", "delete", "delete and insert again", "re-sent"])


@st.composite
def scenarios(draw):
    """The parent's rows, the current rows and the changed rows (updated, inserted, re-sent), keyed by printed key."""
    parent, current, changed = draw_changes(draw, KEYS, OPS, 60, 20)
    return parent, current, changed, draw(st.integers(min_value=0, max_value=4))


def bucket(key, bits):
    return bucket_of(copy_unescape(key), bits)


def cell(key, bits):
    return cell_of(copy_unescape(key), bits)


def lines(rows, bits):
    return sorted(cell_label(cell(k, bits)) + b"\t" + k + b"\t" + h for k, h in rows.items())


class ModelTable:
    """The source as a dict: what a ServerTable would read, and which cells' keys were asked for."""

    def __init__(self, current, changed, bits, *, counts_off=None):
        self.current, self.bits = current, bits
        self.changed = len(changed)
        self._changed = lines(changed, bits)
        self.asked: list[int] = []
        self.counts_off = counts_off

    def changed_blocks(self):
        return iter([self._changed[:7], self._changed[7:]])

    def count(self):
        return len(self.current)

    def cell_counts(self):
        counts = Counter(cell(k, self.bits) for k in self.current)
        if self.counts_off is not None:
            counts[self.counts_off[0] % (1 << (self.bits + CELL_BITS))] += self.counts_off[1]
        return dict(counts)

    def key_blocks(self, cells):
        self.asked.extend(cells)
        return iter([sorted(cell_label(cell(k, self.bits)) + b"\t" + k for k in self.current if cell(k, self.bits) in set(cells))])


def run(parent, source, bits, root):
    parent_state = RowKeyState(root, "parent")
    fingerprint = parent_state.write_buckets("public.t", bits, [lines(parent, bits)])
    parent_state.mark_complete()
    child, deleted = RowKeyState(root, "child"), []
    result = merge_change(source, parent_state, child, "public.t", fingerprint, deleted.extend)
    child.mark_complete()
    return parent_state, child, result, deleted


@settings(max_examples=300, deadline=None)
@given(scenario=scenarios())
def test_the_merged_buckets_equal_the_model_and_only_cells_that_lost_rows_are_compared(scenario):
    parent, current, changed, bits = scenario
    gone = set(parent) - set(current)
    source = ModelTable(current, changed, bits)
    with tempfile.TemporaryDirectory() as root, reads_counted() as reads:
        parent_state, child, result, deleted = run(parent, source, bits, Path(root))
        assert all(count == 1 for (backup, _), count in reads.items() if backup == "parent"), \
            "within the budget, the merge uses the bucket files the count of updates read"
        assert child.damage() is None
        assert [line for block in child.blocks("public.t") for line in block] == lines(current, bits)
        assert sorted(deleted) == sorted(gone) and result.deleted == len(gone)
        assert result.fingerprint == model_fingerprint(current) == child.recorded_fingerprint("public.t")
        lost_cells = sorted({cell(k, bits) for k in gone})
        lost = sorted({bucket(k, bits) for k in gone})
        touched = {bucket(k, bits) for k in changed} | set(lost)
        assert source.asked == lost_cells, "the current keys of exactly the cells that lost rows are read"
        assert result.compared == len(lost) and result.cells_compared == len(lost_cells)
        assert result.keys_read == sum(1 for k in current if cell(k, bits) in lost_cells)
        assert result.rewritten == (len(touched) if changed or gone else 0)
        assert result.counted == bool(gone)
        touched_cells = {cell(k, bits) for k in changed} | set(lost_cells)
        assert result.cells_rewritten == len(touched_cells), "only the cells with changed rows or deletes are encoded again"
        for path in child.bucket_paths("public.t"):  # every other bucket is the parent's file, linked
            number = int(path.name.removesuffix(".rows.zst")[-3:], 16)
            if number not in touched:
                assert os.path.samefile(path, parent_state.path("public.t", number))
            elif (old := parent_state.bucket_file("public.t", number)) is not None:  # its other cells' frames, copied as bytes
                new = child.bucket_file("public.t", number)
                assert all(new.frames[sub] == old.frames[sub] for sub in range(16) if (number << CELL_BITS) | sub not in touched_cells)


@contextlib.contextmanager
def reads_counted():
    """Every RowKeyState.bucket_file call, counted by (backup, bucket)."""
    reads, original = Counter(), RowKeyState.bucket_file

    def counted(self, table, bucket):
        reads[self.dir.name, bucket] += 1
        return original(self, table, bucket)

    with mock.patch.object(RowKeyState, "bucket_file", counted):
        yield reads


@settings(max_examples=100, deadline=None)
@given(scenario=scenarios())
def test_beyond_the_budget_the_merge_reads_the_bucket_files_again_and_agrees(scenario):
    parent, current, changed, bits = scenario
    with tempfile.TemporaryDirectory() as root, mock.patch.object(rowstate, "READ_BUCKETS_BUDGET", 0), reads_counted() as reads:
        _, child, result, deleted = run(parent, ModelTable(current, changed, bits), bits, Path(root))
        assert [line for block in child.blocks("public.t") for line in block] == lines(current, bits)
        assert sorted(deleted) == sorted(set(parent) - set(current)) and result.fingerprint == model_fingerprint(current)
        assert all(count <= 2 for (backup, _), count in reads.items() if backup == "parent")


@settings(max_examples=200, deadline=None)
@given(scenario=scenarios(), off=st.tuples(st.integers(min_value=0, max_value=255), st.sampled_from([-2, -1, 1, 2])))
def test_cell_counts_that_do_not_add_up_are_a_mismatch(scenario, off):
    """One cell's count off (a wrong state, a cell function that moved): never a silently wrong state."""
    parent, current, changed, bits = scenario
    if not set(parent) - set(current):
        return  # no deletes: the cells are not counted at all
    with tempfile.TemporaryDirectory() as root, pytest.raises(StateMismatch):
        run(parent, ModelTable(current, changed, bits, counts_off=off), bits, Path(root))


def test_deleted_by_cell_is_parent_minus_now_plus_new_rows():
    def cells(*counts):
        return tuple(counts) + (0,) * (16 - len(counts))

    listing = TableListing(2, {"rows": 12, "hash": "0:0"},
                           {b: rowstate.FileChecksum(1, "x", {"rows": sum(c), "hash": "0:0"}, c)
                            for b, c in ((0, cells(4, 1)), (1, cells(0, 0, 3)), (2, cells(4)))})
    # cell 0x00: 2 updated, 1 insert, 1 delete -> 4 - 1 + 1 = 4; cell 0x12: untouched, 2 deleted; cell 0x35: 2 new rows only
    changes = {0x00: (3, 2), 0x35: (2, 0)}
    now = {0x00: 4, 0x01: 1, 0x12: 1, 0x20: 4, 0x35: 2}
    assert deleted_by_cell("t", listing, changes, now, 12) == {0x00: 1, 0x12: 2}
    with pytest.raises(StateMismatch, match="cell 0020 holds 5"):
        deleted_by_cell("t", listing, changes, {**now, 0x20: 5, 0x35: 1}, 12)
    with pytest.raises(StateMismatch, match="cells hold"):
        deleted_by_cell("t", listing, changes, now, 13)


# -- on the real PostgreSQL: an incremental after a small delete reads only the buckets that lost rows ----------


def test_an_incremental_after_a_few_deletes_reads_only_the_buckets_that_lost_rows(shop_db, capture, client, make_database):
    execute(shop_db, "CREATE TABLE big (id int PRIMARY KEY, v text)", "INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 100000) g",
            "ANALYZE big")
    full = publish(capture.full(), client)
    listing = RowKeyState(capture.state_root, full.id).table_listing("public.big")
    assert listing.bits == bits_for(100_000) == 6 and listing.function == "int"
    execute(shop_db, "DELETE FROM big WHERE id IN (17, 4242, 99999)", "UPDATE big SET v = 'changed' WHERE id = 50000")
    inc = publish(capture.incremental(full), client)
    assert inc.kind == "incremental"
    big, work = inc.details["captured"]["public.big"], inc.details["row_state"]["public.big"]
    assert big["deleted"] == 3 and big["upserted"] >= 1
    per_bucket = 100_000 / 64
    assert work["buckets"] == 64 and work["compared"] <= 3 and work["cells_compared"] <= 3, work
    assert work["keys_read"] < 3 * 2 * per_bucket / 16, work  # a cell's keys, not a bucket's
    assert work["cells_rewritten"] <= 4, work  # the cells of 3 deletes and an update are encoded again, not their buckets
    assert work["rewritten"] <= 4 + big["upserted"] - 1, work
    state = RowKeyState(capture.state_root, inc.id)
    assert state.damage() is None and state.recorded_fingerprint("public.big") == inc.details["fingerprints"]["public.big"]
    assert database_content(restore(client, inc.id, make_database)) == database_content(shop_db)


def test_a_changed_line_splits_into_its_state_line_and_its_row():
    """The key ends at the first tab after the label (COPY prints a key's tab as \\t); the row is all after the hash."""
    from pgbackup.capture.rowstate import StateDamaged, split_changed_line

    digest = b"0123456789abcdef" * 2
    line = b'01f3\t("a\\tb",7)\t' + digest + b"\ta\\tb\t7\t\\N"
    assert split_changed_line(line) == (b'01f3\t("a\\tb",7)\t' + digest, b"a\\tb\t7\t\\N")
    for damaged in (b'01f3\t("a",7)\t' + digest, b'01f3\t("a",7)\t' + digest[:-1] + b"\tx", b"01f3\tno tabs"):
        with pytest.raises(StateDamaged):
            split_changed_line(damaged)


# -- memory: a bucket is never held whole by a full; an incremental promotes before its buckets grow too big ----------


def test_a_full_writes_a_bucket_of_any_size_a_block_at_a_time(tmp_path):
    """A table's statistics may be stale: a full whose one bucket gets 320,000 rows holds a block of them, not the bucket."""
    import tracemalloc

    def blocks(rows, size):
        for first in range(0, rows, size):
            yield sorted(cell_label((n >> 4) % 16) + b"\t(%07d)\t" % n + b"%032x" % n for n in range(first, first + size))

    def sorted_blocks():  # the cells in order across blocks: each block one cell's run of keys
        for sub in range(16):
            for block in blocks(20_000, 2_000):
                yield [line.replace(line[:4], cell_label(sub), 1) for line in block]

    state = RowKeyState(tmp_path, "full")
    tracemalloc.start()
    fingerprint = state.write_buckets("public.t", 0, sorted_blocks())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    state.mark_complete()
    assert fingerprint["rows"] == 16 * 10 * 2_000
    assert state.damage() is None and sum(len(block) for block in state.blocks("public.t")) == fingerprint["rows"]
    assert peak < 4 << 20, f"{peak / 2**20:.1f} MiB held while writing a bucket of {fingerprint['rows']} rows"


def test_a_table_that_outgrew_its_buckets_is_refused_by_the_merge(tmp_path):
    parent, current = {b"(%d)" % n: b"%032x" % n for n in range(5)}, {b"(%d)" % n: b"%032x" % n for n in range(40)}
    changed = {k: v for k, v in current.items() if k not in parent}
    with mock.patch.object(rowstate, "OUTGROWN_ROWS_PER_BUCKET", 8):
        for bits, outgrown in ((0, True), (2, True), (3, False)):  # 40 rows: over 8 a bucket in 1 and 4 buckets, not in 8
            root = tmp_path / str(bits)
            if outgrown:
                with pytest.raises(rowstate.StateOutgrown, match="40 rows in the"):
                    run(parent, ModelTable(current, changed, bits), bits, root)
            else:
                assert run(parent, ModelTable(current, changed, bits), bits, root)[2].fingerprint == model_fingerprint(current)


def test_an_incremental_after_a_table_outgrew_its_buckets_is_a_full_that_cuts_it_anew(shop_db, capture, client, make_database):
    execute(shop_db, "CREATE TABLE grows (id int PRIMARY KEY, v text)", "INSERT INTO grows SELECT g, 'v' FROM generate_series(1, 10) g",
            "ANALYZE grows")
    full = publish(capture.full(), client)
    assert RowKeyState(capture.state_root, full.id).table_listing("public.grows").bits == 0
    execute(shop_db, f"INSERT INTO grows SELECT g, 'w' FROM generate_series(11, {rowstate.OUTGROWN_ROWS_PER_BUCKET + 11}) g",
            "ANALYZE grows")
    promoted = publish(capture.incremental(full), client)
    assert promoted.kind == "full" and "is outgrown" in promoted.details["promoted_from_incremental"]
    rows = 10 + rowstate.OUTGROWN_ROWS_PER_BUCKET + 1
    assert f"public.grows has {rows} rows in the 1 buckets" in promoted.details["promoted_from_incremental"]
    assert RowKeyState(capture.state_root, promoted.id).table_listing("public.grows").bits == bits_for(rows)
    execute(shop_db, "DELETE FROM grows WHERE id = 5")
    inc = publish(capture.incremental(promoted), client)
    assert inc.kind == "incremental" and inc.details["captured"]["public.grows"]["deleted"] == 1
    assert database_content(restore(client, inc.id, make_database)) == database_content(shop_db)

