"""Operations on the source, each a function ``(source, catalog, draw, enabled) -> transactions``.

``draw`` is Hypothesis's ``data.draw``; ``enabled(family)`` says whether a named family of
operations is on (see ``FAMILIES``).  An operation returns the transactions it wants run —
lists of SQL statements — or ``[]`` when there is nothing for it to do (no table yet).
Rows are picked by their text in ``COLLATE "C"`` order, never by physical position, so a
replayed example picks the same rows.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st
from psycopg2 import sql

from differential import values
from differential.source import HARNESS_SCHEMA, Relation, Source, SourceCatalog
from differential.source import quoted as ident

# Every family the generator knows; KNOWN_GAPS / PGBACKUP_FUZZ_SKIP name these to switch some off.
FAMILIES = {
    "rows": "inserts, updates, deletes, and delete-then-reinsert of the same key",
    "key_updates": "updates of primary-key columns",
    "truncate": "TRUNCATE",
    "renames": "renames of tables, schemas and columns, and tables moved between schemas",
    "swaps": "two tables or two schemas swapping names",
    "columns": "ADD, DROP and ALTER COLUMN ... TYPE",
    "tables": "new and dropped tables",
    "empty_database": "the last table dropped: a backup of a database without tables",
    "schemas": "new schemas",
    "partitions": "partitioned tables, rows moving between partitions, detached partitions",
    "matviews": "materialized views and their refreshes",
    "large_objects": "large objects written, overwritten in part, and unlinked",
    "sequences": "sequences created, advanced and set",
    "triggers": "row triggers (ENABLE, DISABLE) that write to an audit table",
    "trigger_always": "triggers set ENABLE ALWAYS",
    "trigger_replica": "triggers set ENABLE REPLICA",
    "no_pk": "tables without a primary key",
    "include_pk": "primary keys with INCLUDE columns",
    "generated": "generated columns, also as the primary key",
    "identity": "identity primary keys",
    "serial": "bigserial primary keys",
    "zero_columns": "tables with no columns",
    "odd_identifiers": "names with spaces, quotes, backslashes and non-ASCII",
    "dotted_names": "names with dots",
    "odd_values": "bytea bytes, control characters, -0, NaN, Infinity, 1.00, odd intervals and timestamps",
    "other_timezone": "timestamptz literals written under a TimeZone other than UTC",
    "latin1": "a LATIN1 source database",
}

Draw = Callable[..., object]
Enabled = Callable[[str], bool]
Transactions = list[list[str]]

SHAPES = {  # table shape: the family it belongs to
    "int_pk": "tables", "composite_pk": "tables", "text_pk": "tables", "serial_pk": "serial", "no_pk": "no_pk",
    "include_pk": "include_pk", "identity_pk": "identity", "generated_pk": "generated", "zero_columns": "zero_columns",
    "partitioned": "partitions",
}
AUDIT_FUNCTION = f"{HARNESS_SCHEMA}.audit"
LARGE_OBJECT_OIDS = tuple(4_000_000 + n for n in range(4))


def harness_setup() -> Transactions:
    """The audit table and the function the generated triggers call; outside every operation's reach."""
    return [[
        f"CREATE SCHEMA {HARNESS_SCHEMA}",
        f"CREATE TABLE {HARNESS_SCHEMA}.audit_log (n bigserial PRIMARY KEY, tab text NOT NULL, op text NOT NULL)",
        f"CREATE FUNCTION {AUDIT_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"INSERT INTO {HARNESS_SCHEMA}.audit_log (tab, op) VALUES (TG_TABLE_NAME, TG_OP); RETURN NULL; END $$",
    ]]


def fresh_name(taken: set[str], wanted: str) -> str:
    name, n = wanted, 2
    while name in taken:
        name, n = f"{wanted} {n}", n + 1
    return name


def pick(draw: Draw, items: list, label: str):
    return draw(st.sampled_from(items), label=label)


# -- tables ------------------------------------------------------------------------------
def create_table(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    schema = pick(draw, list(cat.schemas), "schema")
    name = fresh_name(cat.names_in(schema), pick(draw, list(values.names(on("odd_identifiers"), on("dotted_names"))), "name"))
    table = ident(schema, name)
    twins = [t for t in cat.of_kind("r") if not t.partition_of]
    if twins and draw(st.booleans(), label="twin of an existing table"):
        # Same columns, keys and defaults: a swap of twins leaves the schema's text unchanged.
        return [[f"CREATE TABLE {table} (LIKE {pick(draw, twins, 'twin of').sql} INCLUDING ALL)"]]
    shape = pick(draw, [s for s, family in SHAPES.items() if on(family)] or ["int_pk"], "shape")
    if shape == "zero_columns":
        return [[f"CREATE TABLE {table} ()"]]
    picked = draw(st.lists(st.sampled_from(values.column_names(on("odd_identifiers"))), min_size=1, max_size=3, unique=True), label="columns")
    cols = [f"{ident(c)} {pick(draw, list(values.VALUE_TYPES), 'type')}" for c in picked]
    if on("generated") and shape not in ("text_pk", "serial_pk") and draw(st.booleans(), label="generated column"):
        cols.append('"twice" bigint GENERATED ALWAYS AS (k * 2) STORED')
    body = {
        "int_pk": ["k integer PRIMARY KEY", *cols],
        "composite_pk": ["k integer", "tag text", *cols, "PRIMARY KEY (k, tag)"],
        "text_pk": ["code text PRIMARY KEY", *cols],
        "serial_pk": ["id bigserial PRIMARY KEY", *cols],
        "no_pk": ["k integer", *cols],
        "include_pk": ["k integer", *cols, f"PRIMARY KEY (k) INCLUDE ({ident(picked[0])})"],
        "identity_pk": ["id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "k integer", *cols],
        "generated_pk": ["k integer NOT NULL", "id integer GENERATED ALWAYS AS (k * 2 + 1) STORED PRIMARY KEY", *cols],
        "partitioned": ["k integer", "region text", *cols, "PRIMARY KEY (k, region)"],
    }[shape]
    statement = f"CREATE TABLE {table} ({', '.join(body)})"
    if shape != "partitioned":
        return [[statement]]
    return [[
        statement + " PARTITION BY LIST (region)",
        f"CREATE TABLE {ident(schema, name + '_a')} PARTITION OF {table} FOR VALUES IN ('a')",
        f"CREATE TABLE {ident(schema, name + '_b')} PARTITION OF {table} FOR VALUES IN ('b')",
        f"CREATE TABLE {ident(schema, name + '_rest')} PARTITION OF {table} DEFAULT",
    ]]


def drop_table(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    tables = [t for t in cat.tables() if not t.partition_of]
    if not tables or (len(tables) == 1 and not on("empty_database")):
        return []
    return [[f"DROP TABLE {pick(draw, tables, 'table').sql} CASCADE"]]


def create_schema(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    name = fresh_name(set(cat.schemas), pick(draw, list(values.schema_names(on("odd_identifiers"), on("dotted_names"))), "schema"))
    return [[f"CREATE SCHEMA {ident(name)}"]]


# -- rows --------------------------------------------------------------------------------
def _value(src: Source, draw: Draw, on: Enabled, table: Relation, column, latin1: bool) -> str:
    if column.name in table.key or column.name == "region":
        return src.literal(draw(values.key_values(column.type, on("odd_identifiers"), latin1), label=column.name), column.type)
    try:
        strategy = values.column_values(column.type, on("odd_values"), latin1)
    except ValueError:
        return "NULL"
    value = draw(st.none() | strategy, label=column.name)
    return "NULL" if value is None else src.literal(value, column.type)


def _timezone(draw: Draw, on: Enabled) -> list[str]:
    if on("other_timezone") and draw(st.booleans(), label="other TimeZone"):
        return [f"SET LOCAL TimeZone = '{pick(draw, list(values.OTHER_TIMEZONES), 'TimeZone')}'"]
    return []


def _chosen(src: Source, table: Relation, draw: Draw, most: int) -> str | None:
    """A WHERE clause naming up to ``most`` rows of ``table``, or None when it is empty."""
    (count,), = src.query(sql.SQL("SELECT count(*) FROM {}").format(table.ident))
    if not count:
        return None
    offset = draw(st.integers(0, count - 1), label="first row")
    limit = draw(st.integers(1, most), label="rows")
    return (f"(tableoid, ctid) IN (SELECT tableoid, ctid FROM {table.sql} AS r "
            f'ORDER BY r::text COLLATE "C" LIMIT {limit} OFFSET {offset})')


def insert_rows(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled, latin1: bool) -> Transactions:
    tables = cat.tables()
    if not tables:
        return []
    table = pick(draw, tables, "table")
    columns = [c for c in table.columns if c.insertable]
    n = draw(st.integers(1, 4), label="how many")
    if not columns:
        return [_timezone(draw, on) + [f"INSERT INTO {table.sql} DEFAULT VALUES"] * n]
    rows = ", ".join("(" + ", ".join(_value(src, draw, on, table, c, latin1) for c in columns) + ")" for _ in range(n))
    names = ", ".join(ident(c.name) for c in columns)
    return [_timezone(draw, on) + [f"INSERT INTO {table.sql} ({names}) VALUES {rows} ON CONFLICT DO NOTHING"]]


def update_rows(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled, latin1: bool) -> Transactions:
    """Set a column of a few rows; with key_updates on, the column may be a primary-key column (or a partition key)."""
    candidates = [(t, c) for t in cat.tables() for c in t.columns
                  if c.insertable and (on("key_updates") or (c.name not in t.key and c.name != "region"))]
    if not candidates:
        return []
    table, column = pick(draw, candidates, "table and column")
    where = _chosen(src, table, draw, 1 if column.name in table.key else 4)
    if where is None:
        return []
    value = _value(src, draw, on, table, column, latin1)
    return [_timezone(draw, on) + [f"UPDATE {table.sql} SET {ident(column.name)} = {value} WHERE {where}"]]


def delete_rows(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    tables = cat.tables()
    if not tables:
        return []
    table = pick(draw, tables, "table")
    where = _chosen(src, table, draw, 4)
    return [[f"DELETE FROM {table.sql} WHERE {where}"]] if where else []


def delete_and_reinsert(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled, latin1: bool) -> Transactions:
    """Delete one row and insert its key again with new values — in one transaction, or in two in a row."""
    tables = [t for t in cat.tables() if t.key]
    if not tables:
        return []
    table = pick(draw, tables, "table")
    where = _chosen(src, table, draw, 1)
    if where is None:
        return []
    columns = [c for c in table.columns if c.insertable]
    keep = {c.name for c in columns if c.name in table.key or c.name in ("k", "region")}
    texts = src.query(sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c.name)) for c in columns), table.ident, sql.SQL(where)))
    if not texts:
        return []
    row = [src.literal(text, c.type) if c.name in keep and text is not None else
           ("NULL" if c.name in keep else _value(src, draw, on, table, c, latin1)) for c, text in zip(columns, texts[0])]
    delete = f"DELETE FROM {table.sql} WHERE {where}"
    insert = f"INSERT INTO {table.sql} ({', '.join(ident(c.name) for c in columns)}) VALUES ({', '.join(row)})"
    if draw(st.booleans(), label="in one transaction"):
        return [[delete, insert]]
    return [[delete], [insert]]


def truncate(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    tables = cat.tables()
    return [[f"TRUNCATE {pick(draw, tables, 'table').sql}"]] if tables else []


# -- names -------------------------------------------------------------------------------
_RELATION_WORD = {"r": "TABLE", "p": "TABLE", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}


def rename(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    what = pick(draw, ["relation", "schema", "column", "move to schema"], "rename what")
    odd_names = list(values.names(on("odd_identifiers"), on("dotted_names")))
    if what == "relation" and cat.relations:
        rel = pick(draw, list(cat.relations), "relation")
        new = fresh_name(cat.names_in(rel.schema), pick(draw, odd_names, "new name"))
        return [[f"ALTER {_RELATION_WORD[rel.kind]} {rel.sql} RENAME TO {ident(new)}"]]
    if what == "schema" and cat.schemas:
        schema = pick(draw, list(cat.schemas), "schema")
        new = fresh_name(set(cat.schemas), pick(draw, list(values.schema_names(on("odd_identifiers"), on("dotted_names"))), "new name"))
        return [[f"ALTER SCHEMA {ident(schema)} RENAME TO {ident(new)}"]]
    if what == "column":
        tables = [t for t in cat.of_kind("r", "p") if t.columns and not t.partition_of]
        if tables:
            table = pick(draw, tables, "table")
            column = pick(draw, [c.name for c in table.columns], "column")
            new = fresh_name({c.name for c in table.columns}, pick(draw, list(values.column_names(on("odd_identifiers"))), "new name"))
            return [[f"ALTER TABLE {table.sql} RENAME COLUMN {ident(column)} TO {ident(new)}"]]
    if what == "move to schema" and len(cat.schemas) > 1:
        rel = pick(draw, [r for r in cat.relations if r.kind in "rpm" and not r.partition_of] or [None], "relation")
        if rel is not None:
            schema = pick(draw, [s for s in cat.schemas if s != rel.schema], "schema")
            if rel.name not in cat.names_in(schema):
                return [[f"ALTER {_RELATION_WORD[rel.kind]} {rel.sql} SET SCHEMA {ident(schema)}"]]
    return []


def swap(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    """Two tables (or two schemas) exchange names in one transaction: same names, other contents."""
    pairs = [(a, b) for a in cat.of_kind("r", "p") for b in cat.of_kind("r", "p") if a.schema == b.schema and a.name < b.name]
    if draw(st.booleans(), label="swap schemas") and len(cat.schemas) > 1:
        a, b = draw(st.lists(st.sampled_from(list(cat.schemas)), min_size=2, max_size=2, unique=True), label="schemas")
        tmp = fresh_name(set(cat.schemas), "swap tmp")
        return [[f"ALTER SCHEMA {ident(a)} RENAME TO {ident(tmp)}", f"ALTER SCHEMA {ident(b)} RENAME TO {ident(a)}",
                 f"ALTER SCHEMA {ident(tmp)} RENAME TO {ident(b)}"]]
    if not pairs:
        return []
    a, b = pick(draw, pairs, "tables")
    tmp = fresh_name(cat.names_in(a.schema), "swap tmp")
    return [[f"ALTER TABLE {a.sql} RENAME TO {ident(tmp)}", f"ALTER TABLE {b.sql} RENAME TO {ident(a.name)}",
             f"ALTER TABLE {ident(a.schema, tmp)} RENAME TO {ident(b.name)}"]]


# -- columns -----------------------------------------------------------------------------
def alter_columns(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled, latin1: bool) -> Transactions:
    tables = [t for t in cat.of_kind("r", "p") if not t.partition_of]
    if not tables:
        return []
    table = pick(draw, tables, "table")
    what = pick(draw, ["add", "drop", "type"], "column change")
    changeable = [c for c in table.columns if c.name not in table.key and c.name not in ("k", "region") and not c.generated]
    if what == "add":
        name = fresh_name({c.name for c in table.columns}, pick(draw, list(values.column_names(on("odd_identifiers"))), "column"))
        type_ = pick(draw, list(values.VALUE_TYPES), "type")
        statement = f"ALTER TABLE {table.sql} ADD COLUMN {ident(name)} {type_}"
        if draw(st.booleans(), label="with a default"):
            default = draw(values.column_values(type_, on("odd_values"), latin1), label="default")
            statement += f" DEFAULT {src.literal(default, type_)}"
        return [[statement]]
    if not changeable:
        return []
    column = pick(draw, changeable, "column")
    if what == "drop":
        return [[f"ALTER TABLE {table.sql} DROP COLUMN {ident(column.name)}"]]
    new_type = "bigint" if column.type == "integer" else "text"
    return [[f"ALTER TABLE {table.sql} ALTER COLUMN {ident(column.name)} TYPE {new_type} USING {ident(column.name)}::{new_type}"]]


# -- partitions, matviews, large objects, sequences, triggers ----------------------------------
def move_partition_rows(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    """An UPDATE of the partition key: the rows leave one partition for another."""
    parents = [p for p in cat.of_kind("p") if "region" in {c.name for c in p.columns}]
    if not parents:
        return []
    parent = pick(draw, parents, "partitioned table")
    where = _chosen(src, parent, draw, 2)
    if where is None:
        return []
    return [[f"UPDATE {parent.sql} SET region = '{pick(draw, ['a', 'b', 'c'], 'new region')}' WHERE {where}"]]


def detach_partition(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    parts = [r for r in cat.relations if r.partition_of]
    if not parts:
        return []
    part = pick(draw, parts, "partition")
    return [[f"ALTER TABLE {ident(*part.partition_of)} DETACH PARTITION {part.sql}"]]


def refresh_matview(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    views = cat.of_kind("m")
    return [[f"REFRESH MATERIALIZED VIEW {pick(draw, views, 'materialized view').sql}"]] if views else []


def create_matview(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    tables = cat.tables()
    if not tables:
        return []
    table = pick(draw, tables, "table")
    name = fresh_name(cat.names_in(table.schema), "mv " + table.name)
    data = " WITH NO DATA" if draw(st.booleans(), label="with no data") else ""
    return [[f"CREATE MATERIALIZED VIEW {ident(table.schema, name)} AS SELECT * FROM {table.sql}{data}"]]


def large_object_change(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    oid = pick(draw, list(LARGE_OBJECT_OIDS), "large object")
    data = src.literal(draw(st.binary(min_size=1, max_size=16), label="bytes"))
    if oid not in cat.large_objects:
        return [[f"SELECT lo_from_bytea({oid}, {data})"]]
    if draw(st.booleans(), label="unlink"):
        return [[f"SELECT lo_unlink({oid})"]]
    return [[f"SELECT lo_put({oid}, {draw(st.integers(0, 20), label='offset')}, {data})"]]


def create_sequence(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    schema = pick(draw, list(cat.schemas), "schema")
    name = fresh_name(cat.names_in(schema), "seq " + pick(draw, list(values.names(on("odd_identifiers"), on("dotted_names"))), "name"))
    return [[f"CREATE SEQUENCE {ident(schema, name)}"]]


def advance_sequence(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    """nextval a few times, or setval to a value with is_called either way (serial and identity sequences too)."""
    sequences = cat.of_kind("S")
    if not sequences:
        return []
    seq = pick(draw, sequences, "sequence")
    if draw(st.booleans(), label="nextval"):
        return [[f"SELECT nextval({src.literal(seq.sql)}::regclass) FROM generate_series(1, {draw(st.integers(1, 3), label='times')})"]]
    value, called = draw(st.integers(1, 10**6), label="value"), draw(st.booleans(), label="is_called")
    return [[f"SELECT setval({src.literal(seq.sql)}::regclass, {value}, {called})"]]


TRIGGER_MODES = {"ENABLE": "triggers", "DISABLE": "triggers", "ENABLE ALWAYS": "trigger_always", "ENABLE REPLICA": "trigger_replica"}


def trigger_change(src: Source, cat: SourceCatalog, draw: Draw, on: Enabled) -> Transactions:
    """A row trigger writing every change to the audit table, or a new enable mode for one."""
    tables = cat.tables()
    if not tables:
        return []
    table = pick(draw, tables, "table")
    mode = pick(draw, [m for m, family in TRIGGER_MODES.items() if on(family)], "mode")
    if table.triggers and draw(st.booleans(), label="existing trigger"):
        name = pick(draw, list(table.triggers), "trigger")
        return [[f"ALTER TABLE {table.sql} {mode} TRIGGER {ident(name)}"]]
    name = fresh_name(set(table.triggers), "audit")
    return [[f"CREATE TRIGGER {ident(name)} AFTER INSERT OR UPDATE OR DELETE ON {table.sql} "
             f"FOR EACH ROW EXECUTE FUNCTION {AUDIT_FUNCTION}()",
             f"ALTER TABLE {table.sql} {mode} TRIGGER {ident(name)}"]]


# The changes of definitions, by family: the capture promotes an incremental to a full after any of them,
# so they are one rule among the data rules, not one each (Hypothesis picks rules uniformly).
SCHEMA_CHANGES = {
    "tables": (create_table, drop_table),
    "schemas": (create_schema,),
    "renames": (rename,),
    "swaps": (swap,),
    "columns": (alter_columns,),
    "partitions": (detach_partition,),
    "matviews": (create_matview,),
    "sequences": (create_sequence,),
    "triggers": (trigger_change,),
}
