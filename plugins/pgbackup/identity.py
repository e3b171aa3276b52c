"""Whose backup is this?  The source database's identity, and how relations are named without ambiguity.

A backup records the identity of the database it was taken from: the cluster's
system identifier (``pg_control_system()``, set by ``initdb`` and kept by
physical copies, standbys and point-in-time recovery), the database's OID and
name, and what decides how its text is stored (encoding, collation, ctype,
locale provider).  Two installations writing under one remote prefix, or a
source replaced by another database of the same name, are told apart by it;
a restore creates its target with the same encoding and locale.

Relations are keyed by ``quote_ident(schema) || '.' || quote_ident(name)``,
computed by the server: plain names read as before (``public.orders``), and
schema ``"a.b"`` table ``c`` can never collide with schema ``a`` table
``"b.c"``.  A key is only ever compared, never split: the schema and the name
are stored beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from psycopg2 import sql

# SQL of a relation's key, given the columns holding its schema and relation names.
RELATION_KEY_SQL = "quote_ident({nsp}) || '.' || quote_ident({rel})"


def relation_key_sql(nsp: str = "n.nspname", rel: str = "c.relname") -> str:
    return RELATION_KEY_SQL.format(nsp=nsp, rel=rel)


SOURCE_IDENTITY_SQL = """
SELECT d.oid::bigint, d.datname, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
       CASE WHEN current_setting('server_version_num')::int >= 150000 THEN
         (SELECT to_jsonb(x)->>'datlocprovider' FROM pg_database x WHERE x.oid = d.oid) ELSE 'c' END,
       CASE WHEN current_setting('server_version_num')::int >= 150000 THEN
         (SELECT coalesce(to_jsonb(x)->>'daticulocale', to_jsonb(x)->>'datlocale') FROM pg_database x WHERE x.oid = d.oid) END
FROM pg_database d WHERE d.datname = current_database()
"""


@dataclass(frozen=True)
class SourceIdentity:
    """The database a backup belongs to; recorded in every manifest as ``details["source"]``."""

    system_identifier: str | None  # None when the role may not call pg_control_system()
    database_oid: int
    database: str
    encoding: str  # e.g. UTF8, LATIN1
    collate: str
    ctype: str
    locale_provider: str = "c"  # 'c' libc, 'i' ICU, 'b' builtin (PostgreSQL 17+)
    icu_locale: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceIdentity:
        return cls(
            system_identifier=data.get("system_identifier"),
            database_oid=int(data["database_oid"]),
            database=str(data["database"]),
            encoding=str(data["encoding"]),
            collate=str(data["collate"]),
            ctype=str(data["ctype"]),
            locale_provider=str(data.get("locale_provider") or "c"),
            icu_locale=data.get("icu_locale"),
        )

    @property
    def key(self) -> str:
        """``<system identifier>/<database oid>``: the same database, whatever its name is today."""
        return f"{self.system_identifier or '?'}/{self.database_oid}"

    def same_database(self, other: SourceIdentity) -> bool:
        """True when both name the same database of the same cluster (an unknown system identifier matches by OID and name)."""
        if self.system_identifier and other.system_identifier:
            return self.system_identifier == other.system_identifier and self.database_oid == other.database_oid
        return self.database_oid == other.database_oid and self.database == other.database

    def describe(self) -> str:
        return f"database {self.database!r} (oid {self.database_oid}) of cluster {self.system_identifier or 'unknown'}"


def read_source_identity(cur) -> SourceIdentity:
    """The identity of the database ``cur`` is connected to.  Safe inside a transaction (a failed probe is rolled back to a savepoint)."""
    cur.execute(SOURCE_IDENTITY_SQL)
    oid, name, encoding, collate, ctype, provider, icu = cur.fetchone()
    cur.execute("SAVEPOINT pgbackup_identity")
    try:
        cur.execute("SELECT system_identifier::text FROM pg_control_system()")
        system_identifier = cur.fetchone()[0]
        cur.execute("RELEASE SAVEPOINT pgbackup_identity")
    except Exception:  # psycopg2.Error: permission denied for the function
        cur.execute("ROLLBACK TO SAVEPOINT pgbackup_identity")
        system_identifier = None
    return SourceIdentity(system_identifier, int(oid), name, encoding, collate, ctype, provider or "c", icu)


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
