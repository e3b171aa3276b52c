"""Whose backup is this?  The source database's identity, as every manifest records it.

A backup records the identity of the database it was taken from: the cluster's
system identifier (``pg_control_system()``, set by ``initdb`` and kept by
physical copies, standbys and point-in-time recovery), the database's OID and
name, and what decides how its text is stored (encoding, collation, ctype,
locale provider).  Two installations writing under one remote prefix, or a
source replaced by another database of the same name, are told apart by it;
a restore creates its target with the same encoding and locale.

It is read from the server by :func:`pgbackup.postgres.sources.read_source_identity`;
relations are named by :mod:`pgbackup.postgres.naming`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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
