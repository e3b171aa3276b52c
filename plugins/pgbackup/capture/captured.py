"""A captured backup as it leaves the capture: every fact its manifest records, and the snapshot details both kinds share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from pgbackup import __version__
from pgbackup.model.manifest import BackupManifest, StoredArtifact, parse_utc, utc_iso
from pgbackup.postgres.snapshot import SnapshotSession
from pgbackup.postgres.tables import TableInfo


@dataclass(frozen=True)
class CapturedBackup:
    """A captured backup on local disk, with every fact its manifest will record."""

    backup_id: str
    kind: str
    object_path: str
    path: str
    bytes: int
    sha256: str
    uncompressed_bytes: int
    database: str
    server_version: str
    pg_dump_version: str
    started_at: str
    finished_at: str
    compression: dict[str, Any]
    parent_id: str | None = None
    base_full_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CapturedBackup:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def manifest(self, *, verified_method: str, extra_details: dict[str, Any] | None = None) -> BackupManifest:
        """The manifest committing this backup once its object was verified on the remote by ``verified_method``."""
        return BackupManifest(
            id=self.backup_id,
            kind=self.kind,
            database=self.database,
            started_at=parse_utc(self.started_at),
            finished_at=parse_utc(self.finished_at),
            server_version=self.server_version,
            pg_dump_version=self.pg_dump_version,
            artifact=StoredArtifact(path=self.object_path, bytes=self.bytes, sha256=self.sha256),
            uncompressed_bytes=self.uncompressed_bytes,
            compression=self.compression,
            tool_version=__version__,
            parent_id=self.parent_id,
            base_full_id=self.base_full_id,
            verified={"at": utc_iso(datetime.now(timezone.utc)), "method": verified_method},
            details={**self.details, **(extra_details or {})},
        )


def snapshot_details(session: SnapshotSession, tables: list[TableInfo], fingerprints: dict, sequences: dict,
                     large_objects: dict | None) -> dict[str, Any]:
    """The manifest details every backup records of its snapshot (CONTRACT: format version 2)."""
    details = {
        "snapshot": session.info.to_dict(),
        "source": session.source.to_dict(),
        "settings": dict(session.settings),
        "fingerprints": fingerprints,
        "sequences": sequences,
        "tables": {t.qualified: t.identity() for t in tables},
    }
    if large_objects:
        details["large_objects"] = large_objects
    return details
