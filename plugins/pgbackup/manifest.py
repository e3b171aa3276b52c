"""The backup manifest: the commit marker and single source of truth of one backup.

A backup exists only once its manifest is stored, and the manifest is written
last, after the object was verified on the remote.  Restore, status, retention
and verify all read manifests, never guess from object names.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from pgbackup.layout import KINDS, is_backup_id

FORMAT = "pgbackup-manifest"
FORMAT_VERSION = 1
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that cannot be trusted: unreadable, incomplete, or from a newer format."""


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone")
    return moment.astimezone(timezone.utc)


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

    @property
    def depends_on(self) -> tuple[str, ...]:
        """Ids of the backups this one cannot be restored without."""
        return tuple(i for i in {self.parent_id, self.base_full_id} if i and i != self.id)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = utc_iso(self.started_at)
        data["finished_at"] = utc_iso(self.finished_at)
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **data}

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
        if problems:
            raise ManifestError(f"manifest {source} is invalid: " + "; ".join(problems))
