"""The user tables and materialized views of a database — what backups capture and fingerprints cover — read from the catalogs.

Extension-owned relations are left out (``CREATE EXTENSION`` recreates them), as pg_dump does.
Partitioned parents hold no rows of their own; their partitions are listed.

Every relation is known by its identity as well as its name: ``oid`` (kept by a
rename, new after a drop and re-create), ``relfilenode`` (new after TRUNCATE,
a rewrite or a non-concurrent ``REFRESH MATERIALIZED VIEW``) and ``key``, the
server-computed ``quote_ident(schema) || '.' || quote_ident(name)``
(``pgbackup.model.identity``), which is only ever compared, never split.

Read inside the capture's transaction, every column here is as the *snapshot*
sees the catalog: ``definition`` is what ``snapshot.hold_table_as_snapshot_sees_it``
compares with the catalog as it is now.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

from pgbackup.postgres.naming import Identifier, relation_key_sql

# The primary key's key columns only (indnkeyatts): INCLUDE columns are not part of a row's identity.
TABLES_SQL = f"""
SELECT n.nspname, c.relname,
  coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
            FROM pg_catalog.pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
            WHERE i.indrelid = c.oid AND i.indisprimary AND k.ord <= i.indnkeyatts), '{{}}'),
  (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''),
  {relation_key_sql()}, c.oid::bigint, c.relfilenode::bigint, c.relkind::text, c.relispopulated,
  (SELECT i.indexrelid::bigint FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
  (SELECT array_agg(a.attname::text || ':' || a.attgenerated::text || ':' || (
     WITH RECURSIVE base(oid, depth) AS (
       SELECT a.atttypid, 0
       UNION ALL SELECT t.typbasetype, base.depth + 1 FROM pg_catalog.pg_type t JOIN base ON t.oid = base.oid
       WHERE t.typtype = 'd')
     SELECT oid FROM base ORDER BY depth DESC LIMIT 1)::text ORDER BY a.attnum)
   FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    key_columns: tuple[str, ...]  # the primary key's key columns, empty when there is none
    columns: tuple[str, ...]  # every stored column, generated ones excluded (they are computed on insert)
    key: str = ""  # quote_ident(schema) || '.' || quote_ident(name), as the server computed it
    oid: int = 0
    relfilenode: int = 0
    kind: str = "r"  # 'r' table, 'm' materialized view
    populated: bool = True  # false for a materialized view created WITH NO DATA (it cannot be read)
    key_index: int | None = None  # the primary key's index
    definition: tuple[str, ...] = ()  # "name:generated:base type oid" of every column, as the snapshot sees them

    @property
    def qualified(self) -> str:
        """The relation's key: what manifests, fingerprints and row-key states are keyed by."""
        return self.key or f"{self.schema}.{self.name}"

    @property
    def is_matview(self) -> bool:
        return self.kind == "m"

    @property
    def ident(self) -> sql.Identifier:
        return Identifier(self.schema, self.name)

    def column_list(self, alias: str | None = None) -> sql.Composable:
        return sql.SQL(", ").join(Identifier(alias, c) if alias else Identifier(c) for c in self.columns)

    def key_text(self, alias: str = "t") -> sql.Composable:
        """The primary key rendered as one text, e.g. ``(42)``: how deletes name rows."""
        return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(Identifier(alias, c) for c in self.key_columns))

    def identity(self) -> dict:
        """What ``details["tables"]`` records of the relation."""
        return {"schema": self.schema, "name": self.name, "oid": self.oid, "relfilenode": self.relfilenode,
                "kind": self.kind, "key_columns": list(self.key_columns)}


def list_tables(cur, *, kinds: tuple[str, ...] = ("r", "m")) -> list[TableInfo]:
    """Tables (kind ``r``) and materialized views (kind ``m``), ordered by schema and name."""
    cur.execute(TABLES_SQL)
    tables = [
        TableInfo(s, n, tuple(keys or ()), tuple(cols or ()), key, oid, node, kind, populated, key_index, tuple(definition or ()))
        for s, n, keys, cols, key, oid, node, kind, populated, key_index, definition in cur.fetchall()
    ]
    return [t for t in tables if t.kind in kinds]
