"""Content fingerprints of a database: per table, the row count and an md5 of its rows in a fixed order.

Two databases with equal fingerprints hold the same rows in every table and
the same sequence values; a restore is checked this way, not by row counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
ORDER BY 1, 2
"""
SEQUENCES_SQL = """
SELECT schemaname, sequencename, last_value FROM pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2
"""


@dataclass(frozen=True)
class TableFingerprint:
    rows: int
    md5: str


def table_fingerprints(conn) -> dict[str, TableFingerprint]:
    """``{"schema.table": TableFingerprint}`` for every user table, read in the connection's current snapshot."""
    result = {}
    with conn.cursor() as cur:
        cur.execute(TABLES_SQL)
        tables = cur.fetchall()
        for schema, table in tables:
            ident = sql.Identifier(schema, table)
            cur.execute(
                sql.SQL("SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM {} AS t").format(ident)
            )
            rows, digest = cur.fetchone()
            result[f"{schema}.{table}"] = TableFingerprint(rows=rows, md5=digest)
    return result


def sequence_values(conn) -> dict[str, int | None]:
    """``{"schema.sequence": last_value}``; None for a sequence never used."""
    with conn.cursor() as cur:
        cur.execute(SEQUENCES_SQL)
        return {f"{s}.{n}": v for s, n, v in cur.fetchall()}
