"""The user tables of a database — what backups capture and fingerprints cover — read from the catalogs.

Extension-owned tables are left out (``CREATE EXTENSION`` recreates them), as pg_dump does.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

TABLES_SQL = """
SELECT n.nspname, c.relname,
  coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
            FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
            WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
  (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    key_columns: tuple[str, ...]  # the primary key, empty when there is none
    columns: tuple[str, ...]  # every stored column, generated ones excluded (they are computed on insert)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def column_list(self, alias: str | None = None) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(alias, c) if alias else sql.Identifier(c) for c in self.columns)

    def key_text(self, alias: str = "t") -> sql.Composable:
        """The primary key rendered as one text, e.g. ``(42)``: how deletes name rows."""
        return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.Identifier(alias, c) for c in self.key_columns))


def list_tables(cur) -> list[TableInfo]:
    cur.execute(TABLES_SQL)
    return [TableInfo(s, n, tuple(keys or ()), tuple(cols or ())) for s, n, keys, cols in cur.fetchall()]
