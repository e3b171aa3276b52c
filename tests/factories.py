"""Build manifests, and store them with stand-in objects, for tests that need a catalog without running a backup."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

from pgbackup.model.identity import SourceIdentity
from pgbackup.model.layout import BackupLayout, new_backup_id
from pgbackup.model.manifest import BackupManifest, StoredArtifact

# The source every factory manifest comes from unless a test names another.
SHOP_SOURCE = SourceIdentity("7300000000000000001", 16384, "shop", "UTF8", "C", "C")


def manifest(kind: str, started_at: datetime, *, parent: BackupManifest | None = None, base: BackupManifest | None = None,
             prefix: str = "database", size: int = 100, source: SourceIdentity | None = SHOP_SOURCE) -> BackupManifest:
    backup_id = new_backup_id(kind, started_at)
    return BackupManifest(
        id=backup_id,
        kind=kind,
        database=source.database if source else "shop",
        started_at=started_at,
        finished_at=started_at + timedelta(minutes=1),
        server_version="15.4",
        pg_dump_version="15.4",
        artifact=StoredArtifact(
            path=BackupLayout(prefix).object_path(kind, backup_id), bytes=size, sha256=hashlib.sha256(backup_id.encode()).hexdigest()
        ),
        uncompressed_bytes=size * 3,
        compression={"algorithm": "zstd", "level": 3},
        tool_version="test",
        parent_id=parent.id if parent else None,
        base_full_id=(base or parent).id if (base or parent) else None,
        details={"source": source.to_dict()} if source else {},
        format_version=2 if source else 1,
    )


DEFAULT_LAYOUT = BackupLayout("database")


def store_backups(root: Path, *manifests: BackupManifest, layout: BackupLayout = DEFAULT_LAYOUT) -> None:
    """Write each backup under a local remote's ``root``: a stand-in object of its artifact's size, then its manifest."""
    for m in manifests:
        (root / m.artifact.path).parent.mkdir(parents=True, exist_ok=True)
        (root / m.artifact.path).write_bytes(b"x" * m.artifact.bytes)
        (root / layout.manifest_path(m.kind, m.id)).write_bytes(m.to_json())
