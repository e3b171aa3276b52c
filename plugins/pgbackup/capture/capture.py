"""Capture a backup — full or incremental — from one snapshot of the source database: the entry point callers hold.

:class:`BackupCapture` is a thin facade over the modules that do the work, so an
operator keeps one object to run and to ``terminate()`` from ``on_kill``:

- ``context.py``      what every capture of a source shares (paths, tools, ids, the children and reader connections to stop);
- ``full.py``         the full: pg_dump of the exported snapshot, the row-key pass beside it;
- ``incremental.py``  the incremental: changed rows, deletes from the parent's row-key state, the delta object;
- ``promotion.py``    the pure decision when an incremental must become a full, and why;
- ``captured.py``     :class:`CapturedBackup`, what a capture hands to upload, verify and the manifest;
- ``large_objects.py``, ``errors.py``, ``dump.py``, ``rowstate.py``, ``delta.py``: the pieces they share.
"""

from __future__ import annotations

from pgbackup.capture.captured import CapturedBackup
from pgbackup.capture.context import CaptureContext
from pgbackup.capture.full import capture_full, capture_promoted_full
from pgbackup.capture.incremental import capture_incremental
from pgbackup.model.manifest import BackupManifest

__all__ = ["BackupCapture", "CapturedBackup"]


class BackupCapture(CaptureContext):
    """Captures full and incremental backups of one source into ``<local_dir>/<prefix>/<kind>/``.

    The context (paths, tools, ids, the children and reader connections ``terminate()`` stops,
    from ``on_kill``'s thread) with the entry points of each kind of capture.
    """

    def full(self) -> CapturedBackup:
        """A full backup in a snapshot of its own."""
        return capture_full(self)

    def full_instead_of_incremental(self, reason: str) -> CapturedBackup:
        """A full taken where an incremental was asked for; the manifest records ``reason``."""
        session = self.open_snapshot()
        try:
            return capture_promoted_full(self, session, reason)
        finally:
            session.close()

    def incremental(self, parent: BackupManifest | None) -> CapturedBackup:
        """An incremental on top of ``parent``, or a full when one cannot be proved right (``promotion.py``)."""
        return capture_incremental(self, parent)
