"""How relations are named without ambiguity: keys the server computes, identifiers quoted right in any encoding.

Relations are keyed by ``quote_ident(schema) || '.' || quote_ident(name)``,
computed by the server: plain names read as before (``public.orders``), and
schema ``"a.b"`` table ``c`` can never collide with schema ``a`` table
``"b.c"``.  A key is only ever compared, never split: the schema and the name
are stored beside it.
"""

from __future__ import annotations

from psycopg2 import sql

# SQL of a relation's key, given the columns holding its schema and relation names.
RELATION_KEY_SQL = "quote_ident({nsp}) || '.' || quote_ident({rel})"


def relation_key_sql(nsp: str = "n.nspname", rel: str = "c.relname") -> str:
    return RELATION_KEY_SQL.format(nsp=nsp, rel=rel)


class Identifier(sql.Identifier):
    """``psycopg2.sql.Identifier`` that stays right on a connection whose encoding is not UTF8.

    psycopg2 2.9's ``quote_ident`` turns the name into UTF-8 bytes and reads the
    quoted result back in the connection's encoding: on a LATIN1 database,
    ``ü`` comes back as ``Ã¼`` and the query names a relation that does not
    exist.  PostgreSQL's rule for a quoted identifier is only to double the
    double quotes (no other escapes), so it is applied here, in Python, and the
    whole query is then encoded once, in the connection's encoding.
    """

    def as_string(self, context) -> str:
        return ".".join('"' + part.replace('"', '""') + '"' for part in self.strings)
