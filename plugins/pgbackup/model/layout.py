"""Where backups live on a remote (and in the local copy): one place that knows the paths.

``<root>/<prefix>/full/<id>.dump.zst`` beside ``<id>.manifest.json``, and
``<root>/<prefix>/incremental/<id>.delta.zst`` beside its manifest.  With root ``DamnedDesigns-Backups`` and the default prefix
``database`` this is the seed's ``DamnedDesigns-Backups/database/{full,incremental}/``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

KINDS = ("full", "incremental")
MANIFEST_SUFFIX = ".manifest.json"
# A full is a pg_dump custom archive; an incremental is our own delta format (pgbackup.capture.delta).
OBJECT_SUFFIX = {"full": ".dump.zst", "incremental": ".delta.zst"}
# ``20261129T020000Z-full`` (before format 2) or ``20261129T020000Z-full-3fa9c2`` (a random suffix).
_ID_RE = re.compile(r"^(\d{8}T\d{6}Z)-(full|incremental)(?:-([0-9a-f]{6}))?$")
SUFFIX_BYTES = 3


def new_backup_id(kind: str, at: datetime) -> str:
    """An id such as ``20261129T020000Z-full-3fa9c2``: the capture's second, the kind, and a random suffix.

    The suffix makes ids unique across installations writing under one prefix
    (two sources backed up in the same second) without any coordination; the
    time part keeps ids readable and roughly sorted.  Order is never taken from
    the id alone: see :mod:`pgbackup.model.catalog`.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown backup kind {kind!r}")
    return at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"-{kind}-{secrets.token_hex(SUFFIX_BYTES)}"


def is_backup_id(text: str) -> bool:
    """True for both forms: ``<stamp>-<kind>`` (older backups) and ``<stamp>-<kind>-<suffix>``."""
    return bool(_ID_RE.match(text))


def backup_id_stamp(backup_id: str) -> str:
    """The ``YYYYmmddTHHMMSSZ`` part of a backup id."""
    match = _ID_RE.match(backup_id)
    if not match:
        raise ValueError(f"{backup_id!r} is not a backup id")
    return match.group(1)


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

    def leases_folder(self) -> str:
        """Where running restores and drills mark the backups they read (:mod:`pgbackup.restore.lease`)."""
        return f"{self.prefix.strip('/')}/leases"

    def lease_path(self, name: str) -> str:
        return f"{self.leases_folder()}/{name}.json"

    def backup_id_of(self, path: str) -> str | None:
        """The backup id a stored file belongs to (its object or manifest), or None for a foreign file."""
        name = path.rsplit("/", 1)[-1]
        stem = name.split(".", 1)[0]
        return stem if is_backup_id(stem) else None
