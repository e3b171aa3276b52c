"""An independent view of a database's content for tests: every row of every table, sorted, and every sequence.

Deliberately not the library's fingerprints, so a bug there cannot hide a bad restore.
"""

from psycopg2 import sql


def database_content(target) -> dict:
    conn = target.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'")
            cur.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2"
            )
            content = {}
            for schema, table in cur.fetchall():
                cur.execute(sql.SQL("SELECT t::text FROM {} AS t ORDER BY 1").format(sql.Identifier(schema, table)))
                content[f"{schema}.{table}"] = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences ORDER BY 1")
            content["<sequences>"] = cur.fetchall()
        return content
    finally:
        conn.close()


def library_fingerprints(target) -> tuple[dict, dict]:
    """The library's own view (per-table fingerprints and sequence values), for tests that compare through it."""
    from pgbackup.postgres.fingerprint import sequence_values, table_fingerprints

    conn = target.connect()
    try:
        return table_fingerprints(conn), sequence_values(conn)
    finally:
        conn.close()
