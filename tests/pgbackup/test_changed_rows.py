"""The incremental's test for "written since the parent's snapshot": exactly the row versions of transactions at or after its xmin.

``changed_rows_condition`` compares ``age(xmin)`` with the parent xmin's age, both in the
reading transaction; these tests check it against the transaction ids PostgreSQL itself
reports, row by row, at every boundary.
"""

from __future__ import annotations

import pytest

from pgbackup.capture.incremental import XID_WRAP, changed_rows_condition

pytestmark = pytest.mark.integration


@pytest.fixture
def rows_by_transaction(make_database):
    """A table whose rows were written by five transactions: {row id: the 64-bit id of the transaction that wrote it}."""
    target = make_database("changed")
    conn = target.connect()
    written = {}
    try:
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        for number in range(5):
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_current_xact_id()::text::bigint")
                xid = cur.fetchone()[0]
                cur.execute("INSERT INTO t SELECT g, 'v' FROM generate_series(%s, %s) g", (number * 10, number * 10 + 9))
                written.update({row: xid for row in range(number * 10, number * 10 + 10)})
        with conn, conn.cursor() as cur:  # an update: the row's version is the newest transaction's
            cur.execute("SELECT pg_current_xact_id()::text::bigint")
            xid = cur.fetchone()[0]
            cur.execute("UPDATE t SET v = 'w' WHERE id = 3")
            written[3] = xid
        yield conn, written
    finally:
        conn.close()


def selected(conn, parent_xmin: int) -> set[int]:
    with conn, conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        condition = changed_rows_condition(parent_xmin)
        cur.execute(f"SELECT id FROM t AS t WHERE {condition.as_string(cur)}")
        return {row for (row,) in cur.fetchall()}


def test_exactly_the_rows_written_at_or_after_the_parent_xmin_are_changed(rows_by_transaction):
    conn, written = rows_by_transaction
    for boundary in sorted(set(written.values())) + [max(written.values()) + 1]:
        for parent_xmin in (boundary - 1, boundary):
            assert selected(conn, parent_xmin) == {row for row, xid in written.items() if xid >= parent_xmin}, parent_xmin


def test_the_parent_xmin_counts_modulo_the_epoch(rows_by_transaction):
    """The manifest's xmin is epoch-extended (64-bit); the rows' xmin is 32-bit: only the id modulo 2^32 matters."""
    conn, written = rows_by_transaction
    middle = sorted(set(written.values()))[2]
    assert selected(conn, middle + 5 * XID_WRAP) == {row for row, xid in written.items() if xid >= middle}


def test_a_special_parent_xmin_makes_every_row_changed_never_none(rows_by_transaction):
    """Bootstrap and frozen ids (below 3) are of age INT_MAX: as a parent's xmin, every row is re-sent rather than missed."""
    conn, written = rows_by_transaction
    assert selected(conn, 2) == set(written)
