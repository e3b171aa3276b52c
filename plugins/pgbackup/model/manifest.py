"""The backup manifest: the commit marker and single source of truth of one backup.

A backup exists only once its manifest is stored, and the manifest is written
last, after the object was verified on the remote.  Restore, status, retention
and verify all read manifests, never guess from object names.

Format versions: 1 (before source identities) is still read; 2 adds a typed
``details`` schema, declared once in :data:`DETAIL_FIELDS`, and requires
``details["source"]`` (whose backup this is).  A reader either understands a
version fully or refuses it: a newer version, or a version-2 manifest whose
details do not match the schema, is a :class:`ManifestError` naming the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from pgbackup.model.layout import KINDS, is_backup_id

FORMAT = "pgbackup-manifest"
FORMAT_VERSION = 2
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_HASH_PAIR_RE = re.compile(r"^-?\d+:-?\d+$")  # a fingerprint hash, "high:low"


class ManifestError(ValueError):
    """A manifest that cannot be trusted: unreadable, incomplete, or from a newer format."""


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone")
    return moment.astimezone(timezone.utc)


# -- the details schema (format version 2) ------------------------------------------------
# Each check returns a problem text, or None when the value is fine.

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shape(fields: dict[str, Any], optional: tuple[str, ...] = ()):
    """A check of a JSON object holding exactly-typed ``fields`` (name -> check); ``optional`` ones may be absent."""

    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"must be an object, not {type(value).__name__}"
        for name, field_check in fields.items():
            if name not in value:
                if name in optional:
                    continue
                return f"lacks {name!r}"
            problem = field_check(value[name])
            if problem:
                return f"{name!r} {problem}"
        return None

    return check


def _typed(*types: type, none: bool = False, test=None, wanted: str = ""):
    def check(value: Any) -> str | None:
        if value is None and none:
            return None
        if isinstance(value, bool) and bool not in types:
            return f"must be {wanted or ' or '.join(t.__name__ for t in types)}, not a boolean"
        if not isinstance(value, types) or (test is not None and not test(value)):
            return f"must be {wanted or ' or '.join(t.__name__ for t in types)}, not {value!r}"
        return None

    return check


def _each(entry_check):
    """A check of ``{KEY: entry}`` where every entry passes ``entry_check``."""

    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"must be an object keyed by relation, not {type(value).__name__}"
        for key, entry in value.items():
            problem = entry_check(entry)
            if problem:
                return f"entry {key!r} {problem}"
        return None

    return check


_TEXT = _typed(str)
_INT = _typed(int)
_HASH = _typed(str, test=lambda v: bool(_HASH_PAIR_RE.match(v)), wanted='a "high:low" hash')
# A materialized view that was never populated has no rows to hash (pgbackup.postgres.fingerprint.UNPOPULATED).
_RELATION_HASH = _typed(str, test=lambda v: v == "unpopulated" or bool(_HASH_PAIR_RE.match(v)), wanted='a "high:low" hash or "unpopulated"')

# details field -> (check, what it means).  The capture writes them; restore and the catalog read them.
DETAIL_FIELDS: dict[str, tuple[Any, str]] = {
    "source": (
        _shape({"system_identifier": _typed(str, none=True), "database_oid": _INT, "database": _TEXT, "encoding": _TEXT,
                "collate": _TEXT, "ctype": _TEXT, "locale_provider": _TEXT, "icu_locale": _typed(str, none=True)},
               optional=("locale_provider", "icu_locale")),
        "whose backup this is: pgbackup.model.identity.SourceIdentity.to_dict()",
    ),
    "snapshot": (
        _shape({"pg_snapshot": _TEXT, "xmin": _INT, "xmax": _INT, "taken_at": _TEXT, "system_identifier": _typed(str, none=True),
                "timeline": _typed(int, none=True), "wal_lsn": _typed(str, none=True)},
               optional=("system_identifier", "timeline", "wal_lsn")),
        "the exported snapshot the backup was read in (64-bit xmin/xmax)",
    ),
    "tables": (
        _each(_shape({"schema": _TEXT, "name": _TEXT, "oid": _INT, "relfilenode": _INT,
                      "kind": _typed(str, test=lambda v: v in ("r", "p", "m"), wanted="'r', 'p' or 'm'"),
                      "key_columns": _typed(list, test=lambda v: all(isinstance(c, str) for c in v), wanted="a list of column names")},
                     optional=("schema", "name", "oid", "relfilenode", "kind"))),
        "every table and materialized view, keyed by relation key",
    ),
    "fingerprints": (_each(_shape({"rows": _INT, "hash": _RELATION_HASH})), "rows and content hash of every table and materialized view"),
    "sequences": (
        _each(_shape({"schema": _TEXT, "name": _TEXT, "last_value": _INT, "is_called": _typed(bool)})),
        "every sequence's state at the snapshot",
    ),
    "large_objects": (_shape({"count": _INT, "hash": _HASH}), "count and hash of the large objects (absent when none)"),
    "settings": (_shape({"client_encoding": _TEXT}), "the rendering settings pinned at capture"),
    "promoted_from_incremental": (_TEXT, "why an incremental run took a full backup"),
    "schema_sha256": (_typed(str, test=lambda v: bool(_SHA256_RE.match(v)), wanted="64 hex digits"), "sha256 of the schema-only dump"),
}
REQUIRED_DETAILS = ("source",)


def details_problems(details: dict[str, Any]) -> list[str]:
    """What in a version-2 ``details`` does not match :data:`DETAIL_FIELDS` (unknown extra fields are allowed)."""
    problems = [f'details["{name}"] is missing (every format-2 manifest records it)' for name in REQUIRED_DETAILS if name not in details]
    for name, (check, _meaning) in DETAIL_FIELDS.items():
        if name in details:
            problem = check(details[name])
            if problem:
                problems.append(f'details["{name}"] {problem}')
    return problems


@dataclass(frozen=True)
class StoredArtifact:
    """The backup's data object: where it is (relative to the remote root), its size and sha256."""

    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class BackupManifest:
    id: str
    kind: str
    database: str
    started_at: datetime
    finished_at: datetime
    server_version: str
    pg_dump_version: str
    artifact: StoredArtifact
    uncompressed_bytes: int
    compression: dict[str, Any]
    tool_version: str
    parent_id: str | None = None
    base_full_id: str | None = None
    verified: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION  # as read; every manifest written is FORMAT_VERSION

    @property
    def depends_on(self) -> tuple[str, ...]:
        """Ids of the backups this one cannot be restored without."""
        return tuple(i for i in {self.parent_id, self.base_full_id} if i and i != self.id)

    @property
    def source(self):
        """The :class:`~pgbackup.model.identity.SourceIdentity` this backup was taken from; None for a version-1 manifest."""
        from pgbackup.model.identity import SourceIdentity

        data = self.details.get("source")
        return SourceIdentity.from_dict(data) if isinstance(data, dict) else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["format_version"]
        data["started_at"] = utc_iso(self.started_at)
        data["finished_at"] = utc_iso(self.finished_at)
        return {"format": FORMAT, "format_version": self.format_version, **data}

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes | str, *, source: str) -> BackupManifest:
        """Parse and validate; every problem names ``source`` (the manifest's path)."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest {source} is not valid JSON ({exc}); it may be truncated") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ManifestError(f"{source} is not a {FORMAT} file")
        version = data.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise ManifestError(f"manifest {source} has no valid format_version")
        if version > FORMAT_VERSION:
            raise ManifestError(
                f"manifest {source} has format version {version}, newer than this tool understands "
                f"({FORMAT_VERSION}); upgrade pgbackup before using this backup"
            )
        try:
            artifact = StoredArtifact(**data["artifact"])
            manifest = cls(
                id=data["id"],
                kind=data["kind"],
                database=data["database"],
                started_at=parse_utc(data["started_at"]),
                finished_at=parse_utc(data["finished_at"]),
                server_version=data["server_version"],
                pg_dump_version=data["pg_dump_version"],
                artifact=artifact,
                uncompressed_bytes=int(data["uncompressed_bytes"]),
                compression=dict(data["compression"]),
                tool_version=data["tool_version"],
                parent_id=data.get("parent_id"),
                base_full_id=data.get("base_full_id"),
                verified=data.get("verified"),
                details=dict(data.get("details") or {}),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"manifest {source} is incomplete or malformed: {exc!r}") from None
        manifest.validate(source)
        return manifest

    def validate(self, source: str) -> None:
        problems = []
        if not is_backup_id(self.id):
            problems.append(f"id {self.id!r} is not a backup id")
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is not one of {KINDS}")
        if not _SHA256_RE.match(self.artifact.sha256):
            problems.append("artifact sha256 is not 64 lowercase hex digits")
        if self.artifact.bytes < 0:
            problems.append("artifact size is negative")
        if self.kind == "incremental" and not (self.parent_id and self.base_full_id):
            problems.append("an incremental needs parent_id and base_full_id")
        if self.finished_at < self.started_at:
            problems.append("finished_at is before started_at")
        if self.verified is not None and not (isinstance(self.verified, dict) and isinstance(self.verified.get("method"), str)):
            problems.append("verified must be null or an object with a 'method'")
        if self.format_version >= 2:
            problems += details_problems(self.details)
        if problems:
            raise ManifestError(f"manifest {source} is invalid: " + "; ".join(problems))
