"""The oracle: what a database holds, read by this test's own SQL and never the project's.

A restore is right when the restored database's ``content_fingerprint`` equals the
source's at the backup point.  The fingerprint keeps, per table and per materialized
view, its columns and the md5 of its sorted row texts; per sequence its
``last_value`` and ``is_called``; per large object the md5 of its bytes; per trigger
its enable mode.  Rows are rendered under pinned settings (the restored copy is
another database, possibly of another encoding), and sorted ``COLLATE "C"`` so the
order does not depend on either database's collation.
"""

from __future__ import annotations

import psycopg2.extensions
from psycopg2 import sql

RENDERING = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "client_encoding": "UTF8",
    "standard_conforming_strings": "on",
}

USER_NAMESPACE = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
)

RELATIONS = f"""
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relispopulated
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm', 'S') AND {USER_NAMESPACE}
ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"
"""

COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated, a.attidentity
FROM pg_attribute a WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""

TRIGGERS = f"""
SELECT trigger, enabled FROM (
  SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) || ' ' || quote_ident(t.tgname) AS trigger, t.tgenabled AS enabled
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE NOT t.tgisinternal AND {USER_NAMESPACE}) AS triggers
ORDER BY trigger COLLATE "C"
"""

LARGE_OBJECTS = "SELECT oid::bigint, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY oid"

KINDS = {"r": "table", "p": "partitioned table", "m": "materialized view", "S": "sequence"}


def content_fingerprint(target) -> dict[str, object]:
    """``{"<kind> <schema>.<name>": value}`` for everything a restore must bring back, read in one snapshot."""
    conn = target.connect()
    try:
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        conn.set_client_encoding(RENDERING["client_encoding"])  # through psycopg2, which decodes with it
        with conn.cursor() as cur:
            for name, value in RENDERING.items():
                if name != "client_encoding":
                    cur.execute("SELECT set_config(%s, %s, true)", (name, value))
            found: dict[str, object] = {}
            cur.execute(RELATIONS)
            for oid, schema, name, kind, populated in cur.fetchall():
                ident = sql.Identifier(schema, name)
                key = f"{KINDS[kind]} {ident.as_string(cur)}"
                if kind == "S":
                    cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(ident))
                    found[key] = tuple(cur.fetchone())
                    continue
                cur.execute(COLUMNS, (oid,))
                entry: dict[str, object] = {"columns": [tuple(col) for col in cur.fetchall()]}
                if kind == "m" and not populated:
                    entry["rows"] = "not populated"
                elif kind != "p":  # a partitioned table holds no rows of its own: its partitions do
                    cur.execute(
                        sql.SQL(
                            "SELECT count(*), md5(coalesce(string_agg(r, E'\\n' ORDER BY r COLLATE \"C\"), ''))"
                            " FROM (SELECT t::text AS r FROM ONLY {} AS t) AS rows"
                        ).format(ident)
                    )
                    entry["rows"], entry["md5"] = cur.fetchone()
                found[key] = entry
            cur.execute(TRIGGERS)
            for trigger, enabled in cur.fetchall():
                found[f"trigger {trigger}"] = enabled
            cur.execute(LARGE_OBJECTS)
            for oid, digest in cur.fetchall():
                found[f"large object {oid}"] = digest
        return found
    finally:
        conn.close()


def differences(expected: dict, actual: dict, limit: int = 8) -> list[str]:
    """One line per key whose value differs, for an assertion message."""
    lines = []
    for key in sorted(set(expected) | set(actual)):
        if expected.get(key) != actual.get(key):
            lines.append(f"{key}: expected {expected.get(key, '<absent>')}, restored {actual.get(key, '<absent>')}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines
