"""The source database as the generator sees it: run one operation's statements, and read what exists now.

The generator picks its targets from the live catalog rather than from a model of its
own, so a rename, swap or drop can never leave the test believing in a table that is
gone.  Every operation is one transaction (or a few, in order); a statement the server
rejects (a key collision, a type that does not cast) rolls its transaction back and the
step is a no-op, which keeps the generator simple and the source always consistent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg2
from psycopg2 import sql

# The generator's own objects (the audit table its triggers write to): never a target of an operation.
HARNESS_SCHEMA = "fuzz_harness"

# What the generator reads through its session is rendered alike on every run (it picks rows by their text).
SESSION_SETTINGS = ("SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'", "SET IntervalStyle = 'postgres'",
                    "SET extra_float_digits = 3", "SET bytea_output = 'hex'")


def quoted(*parts: str) -> str:
    """``"schema"."name"``: every part double-quoted, as quote_ident would when it must."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


@dataclass(frozen=True, repr=False)
class Column:
    name: str
    type: str
    generated: bool
    identity: str  # '' | 'a' (ALWAYS) | 'd' (BY DEFAULT)
    serial: bool  # its default is a nextval()

    def __repr__(self) -> str:
        return quoted(self.name)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))

    @property
    def insertable(self) -> bool:
        return not self.generated and self.identity != "a" and not self.serial


@dataclass(frozen=True, repr=False)
class Relation:
    schema: str
    name: str
    kind: str  # r table, p partitioned table, m materialized view, S sequence
    columns: tuple[Column, ...] = ()
    key: tuple[str, ...] = ()
    partition_of: tuple[str, str] | None = None  # the parent's (schema, name) for a partition
    triggers: tuple[str, ...] = ()

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def sql(self) -> str:
        return quoted(self.schema, self.name)

    def __repr__(self) -> str:
        return self.sql

    def _repr_pretty_(self, printer, cycle) -> None:  # how Hypothesis prints a draw
        printer.text(self.sql)


@dataclass(frozen=True)
class SourceCatalog:
    schemas: tuple[str, ...]
    relations: tuple[Relation, ...]
    large_objects: tuple[int, ...] = field(default=())

    def of_kind(self, *kinds: str) -> list[Relation]:
        return [r for r in self.relations if r.kind in kinds]

    def tables(self) -> list[Relation]:
        """Tables rows can be written to: plain tables, partitions and partitioned parents."""
        return self.of_kind("r", "p")

    def names_in(self, schema: str) -> set[str]:
        return {r.name for r in self.relations if r.schema == schema}


CATALOG_SQL = """
SELECT n.nspname, c.relname, c.relkind,
  coalesce((SELECT array_agg(ARRAY[a.attname::text, format_type(a.atttypid, a.atttypmod), a.attgenerated::text,
                                   a.attidentity::text, (coalesce(pg_get_expr(d.adbin, d.adrelid), '') LIKE 'nextval(%%')::text]
                             ORDER BY a.attnum)
            FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '{}'),
  coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i,
            unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
            WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
  (SELECT ARRAY[pn.nspname::text, p.relname::text] FROM pg_inherits h JOIN pg_class p ON p.oid = h.inhparent
   JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE h.inhrelid = c.oid),
  coalesce((SELECT array_agg(t.tgname::text ORDER BY t.tgname) FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal), '{}')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema', %(harness)s)
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"
"""

SCHEMAS_SQL = """
SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema', %(harness)s)
  AND nspname NOT LIKE 'pg\\_%%' ORDER BY nspname COLLATE "C"
"""


class Source:
    """A session on the source in autocommit mode: each operation opens and ends its own transactions."""

    def __init__(self, target) -> None:
        self.target = target
        self.conn = target.connect()
        self.conn.autocommit = True
        self.conn.set_client_encoding("UTF8")  # psycopg2 then encodes literals as the server expects
        with self.conn.cursor() as cur:
            for statement in SESSION_SETTINGS:
                cur.execute(statement)

    def close(self) -> None:
        self.conn.close()

    def run(self, *transactions: list[str]) -> str | None:
        """Run each list of statements as one transaction; on the first rejected one roll back and return its error."""
        with self.conn.cursor() as cur:
            for statements in transactions:
                try:
                    cur.execute("BEGIN")
                    for statement in statements:
                        cur.execute(statement)
                    cur.execute("COMMIT")
                except psycopg2.Error as exc:
                    cur.execute("ROLLBACK")
                    return str(exc).strip().splitlines()[0]
        return None

    def query(self, statement: str | sql.Composable, params=None) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()

    def literal(self, value, cast: str | None = None) -> str:
        """``value`` as an SQL literal (psycopg2's quoting), with a cast to the column's type when given."""
        with self.conn.cursor() as cur:
            text = cur.mogrify("%s", (value,)).decode()
        return f"{text}::{cast}" if cast else text

    def text(self, composable: sql.Composable) -> str:
        return composable.as_string(self.conn)

    def catalog(self) -> SourceCatalog:
        schemas = tuple(r[0] for r in self.query(SCHEMAS_SQL, {"harness": HARNESS_SCHEMA}))
        relations = []
        for schema, name, kind, columns, key, parent, triggers in self.query(CATALOG_SQL, {"harness": HARNESS_SCHEMA}):
            cols = tuple(Column(c[0], c[1], c[2] != "", c[3], c[4] == "true") for c in columns)
            relations.append(Relation(schema, name, kind, cols, tuple(key), tuple(parent) if parent else None, tuple(triggers)))
        objects = tuple(r[0] for r in self.query("SELECT oid::bigint FROM pg_largeobject_metadata ORDER BY oid"))
        return SourceCatalog(schemas, tuple(relations), objects)
