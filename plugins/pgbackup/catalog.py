"""The catalog: every committed backup in a store, read from the manifests.

Objects without a manifest are *orphans* (an interrupted upload, a failed run):
never listed as backups, reported so retention can clean them.  A manifest that
cannot be read, or that points at a missing or wrongly sized object, is a
*problem*, named with its path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from rclone_provider.client import StoredObject

from pgbackup.layout import KINDS, MANIFEST_SUFFIX, BackupLayout
from pgbackup.manifest import BackupManifest, ManifestError
from pgbackup.store import BackupStore

log = logging.getLogger(__name__)


class BackupNotFound(LookupError):
    """No backup matches what was asked for."""


class BrokenChainError(RuntimeError):
    """A backup cannot be restored because one it depends on is missing."""


@dataclass
class Catalog:
    backups: list[BackupManifest] = field(default_factory=list)
    orphans: list[StoredObject] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    damaged: set[str] = field(default_factory=set)  # ids whose object is missing or has the wrong size

    @classmethod
    def load(cls, store: BackupStore, layout: BackupLayout) -> Catalog:
        folders = {layout.folder(kind) for kind in KINDS}
        objects = [o for o in store.list(layout.prefix, recursive=True) if o.path.rsplit("/", 1)[0] in folders]
        if not objects and hasattr(store, "check_readable"):
            store.check_readable()  # an empty catalog may be a wrong crypt password: say so rather than "no backups"
        by_path = {o.path: o for o in objects}
        catalog = cls()
        claimed: set[str] = set()
        manifest_paths = [o.path for o in objects if o.path.endswith(MANIFEST_SUFFIX)]
        contents = store.read_many(manifest_paths)
        for path in manifest_paths:
            if path not in contents:
                catalog.problems.append(f"manifest {path} vanished while the catalog was read")
                continue
            try:
                manifest = BackupManifest.from_json(contents[path], source=path)
            except ManifestError as exc:
                catalog.problems.append(str(exc))
                claimed.add(path)
                continue
            claimed.update({path, manifest.artifact.path})
            stored = by_path.get(manifest.artifact.path)
            if stored is None:
                catalog.damaged.add(manifest.id)
                catalog.problems.append(f"backup {manifest.id}: object {manifest.artifact.path} is missing")
            elif stored.size >= 0 and stored.size != manifest.artifact.bytes:
                catalog.damaged.add(manifest.id)
                catalog.problems.append(
                    f"backup {manifest.id}: object {manifest.artifact.path} has {stored.size} bytes, manifest says {manifest.artifact.bytes}"
                )
            catalog.backups.append(manifest)
        catalog.orphans = [o for o in objects if o.path not in claimed]
        catalog.backups.sort(key=lambda m: (m.started_at, m.id))
        return catalog

    def get(self, backup_id: str) -> BackupManifest:
        for manifest in self.backups:
            if manifest.id == backup_id:
                return manifest
        raise BackupNotFound(f"no backup with id {backup_id!r}; `backupctl list` shows the ones there are")

    def fulls(self) -> list[BackupManifest]:
        return [m for m in self.backups if m.kind == "full"]

    def latest_full(self) -> BackupManifest | None:
        fulls = self.fulls()
        return fulls[-1] if fulls else None

    def latest_at(self, moment: datetime) -> BackupManifest:
        """The newest backup whose snapshot was taken at or before ``moment``."""
        candidates = [m for m in self.backups if m.started_at <= moment]
        if not candidates:
            first = self.backups[0].started_at.isoformat() if self.backups else "none"
            raise BackupNotFound(f"no backup at or before {moment.isoformat()} (the oldest is {first})")
        return candidates[-1]

    def chain(self, backup_id: str) -> list[BackupManifest]:
        """The backups to apply, base full first, to restore ``backup_id``; every link must be present and whole."""
        known = {m.id: m for m in self.backups}
        chain, current = [], known.get(backup_id)
        if current is None:
            raise BackupNotFound(f"no backup with id {backup_id!r}; `backupctl list` shows the ones there are")
        while True:
            if current.id in self.damaged:
                raise BrokenChainError(f"restoring {backup_id} needs {current.id}, whose object is missing or damaged")
            chain.append(current)
            if current.kind == "full":
                return list(reversed(chain))
            parent = known.get(current.parent_id or "")
            if parent is None:
                raise BrokenChainError(f"restoring {backup_id} needs {current.parent_id}, which is not in the catalog")
            current = parent
