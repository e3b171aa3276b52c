"""Content fingerprints: per table, the row count and an order-independent hash of its rows.

Two databases with equal fingerprints hold the same rows in every table.  The
hash is the sum (as numeric, so it never overflows) of each row's md5 split in
two 64-bit halves: streaming, no sort, no memory that grows with the table.
Each table counts its own rows only (``FROM ONLY``), as pg_dump dumps them: an
inheritance child's rows belong to the child.  Materialized views are fingerprinted
like tables (one created ``WITH NO DATA`` cannot be read: its fingerprint says
``unpopulated``); large objects have one fingerprint for them all.

Rows are rendered with fixed session settings so that a source and a restored copy
on another server print every value alike: ``t::text`` depends on the time zone,
date and interval styles, float digits, bytea and xml output, ``lc_monetary``
(money) and ``search_path`` (``regclass`` and other reg* values print schema-
qualified only when the schema is not on it); COPY's bytes depend on
``client_encoding``, pinned to the database's own encoding.  With ``search_path``
pinned to ``pg_catalog``, every query of the library names user relations with
their schema.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2.extensions
from psycopg2 import sql

from pgbackup.postgres.naming import Identifier, relation_key_sql
from pgbackup.postgres.parallel import spread_over_connections
from pgbackup.postgres.tables import TableInfo, list_tables

# Settings that change how values print (and so their md5) are pinned on both sides;
# client_encoding is pinned too, to the database's own encoding (see pin_output_settings).
STABLE_OUTPUT_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "xmlbinary": "base64",
    "xmloption": "content",
    "lc_monetary": "C",
    "search_path": "pg_catalog",
}
UNPOPULATED = "unpopulated"

@dataclass(frozen=True)
class TableFingerprint:
    rows: int
    hash: str

    def to_dict(self) -> dict:
        return {"rows": self.rows, "hash": self.hash}


def pin_output_settings(cur, *, client_encoding: str | None = None) -> dict[str, str]:
    """Pin the rendering settings and return them (``details["settings"]``); LOCAL, so inside the transaction that reads the rows.

    ``client_encoding`` is the database's own encoding, so COPY's bytes are the stored
    text unconverted; a restore applying them passes the encoding they were written in.
    """
    if client_encoding is None:
        cur.execute("SELECT pg_catalog.current_setting('server_encoding')")
        client_encoding = cur.fetchone()[0]
    settings = {"client_encoding": client_encoding, **STABLE_OUTPUT_SETTINGS}
    for name, value in settings.items():
        cur.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, value))
    return settings


def user_tables(cur) -> list[tuple[str, str]]:
    return [(t.schema, t.name) for t in list_tables(cur)]


def relation_fingerprint(cur, table: TableInfo) -> TableFingerprint:
    """A table's or materialized view's fingerprint; a materialized view that was never populated cannot be read and says so."""
    if not table.populated:
        return TableFingerprint(rows=0, hash=UNPOPULATED)
    return table_fingerprint(cur, table.schema, table.name)


# A row's md5 ``h`` as two signed 64-bit halves; a fingerprint's hash is "<sum of first>:<sum of second>".
HASH_HALVES_SQL = ("('x' || substr(h, 1, 16))::bit(64)::bigint", "('x' || substr(h, 17, 16))::bit(64)::bigint")
_HASH_SUMS = " || ':' || ".join(f"coalesce(sum({half}::numeric), 0)::text" for half in HASH_HALVES_SQL)


def table_fingerprint(cur, schema: str, table: str) -> TableFingerprint:
    cur.execute(
        sql.SQL(
            "SELECT count(*), " + _HASH_SUMS + " FROM (SELECT md5(t::text) AS h FROM ONLY {} AS t) AS rows"
        ).format(Identifier(schema, table))
    )
    rows, digest = cur.fetchone()
    return TableFingerprint(rows=rows, hash=digest)


def large_objects_fingerprint(cur) -> dict | None:
    """``{"count": n, "hash": "high:low"}`` of every large object (its pages' ``(loid, pageno, data)``), None when there are none."""
    cur.execute("SELECT count(*) FROM pg_catalog.pg_largeobject_metadata")
    count = cur.fetchone()[0]
    if not count:
        return None
    cur.execute("SELECT " + _HASH_SUMS + " FROM (SELECT md5(l::text) AS h FROM pg_catalog.pg_largeobject AS l) AS pages")
    return {"count": count, "hash": cur.fetchone()[0]}


def table_fingerprints(conn) -> dict[str, TableFingerprint]:
    """``{key: TableFingerprint}`` for every user table and materialized view, in one transaction of ``conn``."""
    with conn.cursor() as cur:
        pin_output_settings(cur)
        result = {t.qualified: relation_fingerprint(cur, t) for t in list_tables(cur)}
    conn.rollback()
    return result


def snapshot_fingerprints(target, jobs: int = 1) -> tuple[dict[str, TableFingerprint], dict[str, dict]]:
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
            tables = list_tables(cur)
            sequences = read_sequences(cur)
            sizes = {}
            for table in tables:
                cur.execute("SELECT pg_catalog.pg_table_size(%s)", (table.oid,))
                sizes[table.oid] = cur.fetchone()[0]
        for _ in range(min(jobs, len(tables)) - 1):
            conn = target.connect(application_name="pgbackup fingerprints")
            extra.append(conn)
            conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
                pin_output_settings(cur)
        results = spread_over_connections([main, *extra], sorted(tables, key=lambda t: -sizes[t.oid]), relation_fingerprint)
        return {t.qualified: results[t] for t in tables}, sequences
    finally:
        for conn in (*extra, main):
            conn.close()


SEQUENCES_SQL = f"""
SELECT n.nspname, c.relname, {relation_key_sql()}
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def read_sequences(cur) -> dict[str, dict]:
    """``{key: {"schema", "name", "last_value", "is_called"}}``: what ``setval`` needs to put a sequence back."""
    cur.execute(SEQUENCES_SQL)
    values = {}
    for schema, name, key in cur.fetchall():
        cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(Identifier(schema, name)))
        last_value, is_called = cur.fetchone()
        values[key] = {"schema": schema, "name": name, "last_value": int(last_value), "is_called": bool(is_called)}
    return values


def sequence_values(conn) -> dict[str, dict]:
    with conn.cursor() as cur:
        result = read_sequences(cur)
    conn.rollback()
    return result
