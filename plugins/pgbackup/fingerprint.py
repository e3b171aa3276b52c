"""Content fingerprints: per table, the row count and an order-independent hash of its rows.

Two databases with equal fingerprints hold the same rows in every table.  The
hash is the sum (as numeric, so it never overflows) of each row's md5 split in
two 64-bit halves: streaming, no sort, no memory that grows with the table.
Each table counts its own rows only (``FROM ONLY``), as pg_dump dumps them: an
inheritance child's rows belong to the child.  Rows are rendered with fixed session settings so that a source and a restored
copy on another server print every value alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2.extensions
from psycopg2 import sql

from pgbackup.parallel import spread_over_connections
from pgbackup.tables import list_tables

# Settings that change how values print (and so their md5) are pinned on both sides.
STABLE_OUTPUT_SETTINGS = (
    "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL extra_float_digits = 3",
    "SET LOCAL bytea_output = 'hex'",
)

@dataclass(frozen=True)
class TableFingerprint:
    rows: int
    hash: str

    def to_dict(self) -> dict:
        return {"rows": self.rows, "hash": self.hash}


def pin_output_settings(cur) -> None:
    """Must run inside the transaction that reads the rows (the settings are LOCAL)."""
    for statement in STABLE_OUTPUT_SETTINGS:
        cur.execute(statement)


def user_tables(cur) -> list[tuple[str, str]]:
    return [(t.schema, t.name) for t in list_tables(cur)]


def table_fingerprint(cur, schema: str, table: str) -> TableFingerprint:
    cur.execute(
        sql.SQL(
            "SELECT count(*), coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0)::text"
            " || ':' || coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)::text"
            " FROM (SELECT md5(t::text) AS h FROM ONLY {} AS t) AS rows"
        ).format(sql.Identifier(schema, table))
    )
    rows, digest = cur.fetchone()
    return TableFingerprint(rows=rows, hash=digest)


def table_fingerprints(conn) -> dict[str, TableFingerprint]:
    """``{"schema.table": TableFingerprint}`` for every user table, in one transaction of ``conn``."""
    with conn.cursor() as cur:
        pin_output_settings(cur)
        result = {f"{s}.{t}": table_fingerprint(cur, s, t) for s, t in user_tables(cur)}
    conn.rollback()
    return result


def snapshot_fingerprints(target, jobs: int = 1) -> tuple[dict[str, TableFingerprint], dict[str, list]]:
    """Every table's fingerprint and every sequence of ``target``, read on up to ``jobs`` connections at once.

    All connections see one snapshot (exported by the first, imported by the others),
    so the result is exactly what one transaction would read — only sooner.
    Biggest tables first, so the longest read starts at once.
    """
    main = target.connect(application_name="pgbackup fingerprints")
    extra: list = []
    try:
        main.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        with main.cursor() as cur:
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = cur.fetchone()[0]
            pin_output_settings(cur)
            tables = user_tables(cur)
            sequences = read_sequences(cur)
            sizes = {}
            for schema, name in tables:
                cur.execute("SELECT pg_table_size(%s::regclass)", (sql.Identifier(schema, name).as_string(cur),))
                sizes[(schema, name)] = cur.fetchone()[0]
        for _ in range(min(jobs, len(tables)) - 1):
            conn = target.connect(application_name="pgbackup fingerprints")
            extra.append(conn)
            conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
                pin_output_settings(cur)
        results = spread_over_connections([main, *extra], sorted(tables, key=lambda t: -sizes[t]),
                                          lambda cur, table: table_fingerprint(cur, *table))
        return {f"{s}.{t}": results[(s, t)] for s, t in tables}, sequences
    finally:
        for conn in (*extra, main):
            conn.close()


SEQUENCES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def read_sequences(cur) -> dict[str, list]:
    """``{"schema.sequence": [last_value, is_called]}``: what ``setval`` needs to put a sequence back."""
    cur.execute(SEQUENCES_SQL)
    values = {}
    for schema, name in cur.fetchall():
        cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name)))
        last_value, is_called = cur.fetchone()
        values[f"{schema}.{name}"] = [int(last_value), bool(is_called)]
    return values


def sequence_values(conn) -> dict[str, list]:
    with conn.cursor() as cur:
        result = read_sequences(cur)
    conn.rollback()
    return result
