"""Where backups live on a remote (and in the local copy): one place that knows the paths.

``<root>/<prefix>/full/<id>.dump.zst`` beside ``<id>.manifest.json``, and
``<root>/<prefix>/incremental/<id>.delta.zst`` beside its manifest.  With root ``DamnedDesigns-Backups`` and the default prefix
``database`` this is the seed's ``DamnedDesigns-Backups/database/{full,incremental}/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

KINDS = ("full", "incremental")
MANIFEST_SUFFIX = ".manifest.json"
# A full is a pg_dump custom archive; an incremental is our own delta format (pgbackup.delta).
OBJECT_SUFFIX = {"full": ".dump.zst", "incremental": ".delta.zst"}
_ID_RE = re.compile(r"^\d{8}T\d{6}Z-(full|incremental)$")


def new_backup_id(kind: str, at: datetime) -> str:
    """A sortable, unique-per-second id such as ``20261129T020000Z-full``."""
    if kind not in KINDS:
        raise ValueError(f"unknown backup kind {kind!r}")
    return at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"-{kind}"


def is_backup_id(text: str) -> bool:
    return bool(_ID_RE.match(text))


@dataclass(frozen=True)
class BackupLayout:
    prefix: str = "database"

    def folder(self, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown backup kind {kind!r}")
        return f"{self.prefix.strip('/')}/{kind}"

    def object_path(self, kind: str, backup_id: str) -> str:
        return f"{self.folder(kind)}/{backup_id}{OBJECT_SUFFIX[kind]}"

    def manifest_path(self, kind: str, backup_id: str) -> str:
        return f"{self.folder(kind)}/{backup_id}{MANIFEST_SUFFIX}"

    def drills_folder(self) -> str:
        return f"{self.prefix.strip('/')}/drills"

    def drill_path(self, at: datetime) -> str:
        """Where a restore drill's result is recorded, so status can show the latest."""
        return f"{self.drills_folder()}/{at.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-drill.json"

    def backup_id_of(self, path: str) -> str | None:
        """The backup id a stored file belongs to (its object or manifest), or None for a foreign file."""
        name = path.rsplit("/", 1)[-1]
        stem = name.split(".", 1)[0]
        return stem if is_backup_id(stem) else None
