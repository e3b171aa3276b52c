"""What every capture of one source shares: where its objects and row-key states go, its tools, and how to stop it.

A :class:`CaptureContext` outlives one backup (the operator keeps it so ``on_kill``
can reach it); what one backup needs beyond it is passed to the functions of
``full.py`` and ``incremental.py``.  Every child process a capture starts
(pg_dump, pg_dump --schema-only) goes through ``children``, and every connection
reading tables is listed in ``reader_conns``: :meth:`terminate` stops both.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2

from pgbackup.capture.compression import Compression
from pgbackup.capture.dump import DumpError, PgDump, schema_sha256
from pgbackup.capture.rowstate import RowKeyState
from pgbackup.model.layout import BackupLayout, new_backup_id
from pgbackup.postgres.snapshot import SnapshotSession
from pgbackup.postgres.target import PgTarget, PgTools
from rclone_provider.child_process import ChildRegistry

log = logging.getLogger("pgbackup.capture")


class CaptureContext:
    """One source captured into ``<local_dir>/<prefix>/<kind>/``, its row-key states under ``<local_dir>/state/<prefix>``."""

    def __init__(
        self,
        target: PgTarget,
        tools: PgTools,
        compression: Compression,
        *,
        local_dir: Path,
        prefix: str,
        server_version: str,
        logger: logging.Logger | None = None,
        readers: int = 2,
    ) -> None:
        self.target = target
        self.tools = tools
        self.compression = compression
        self.local_dir = Path(local_dir)
        self.layout = BackupLayout(prefix)
        self.state_root = self.local_dir / "state" / prefix
        self.server_version = server_version
        self.log = logger or log
        # Connections reading tables side by side in the snapshot (the session's own included).
        self.readers = max(1, readers)
        self.reader_conns: list = []
        self.children = ChildRegistry()
        self._cancelled = False

    # -- stopping --------------------------------------------------------------------
    def terminate(self) -> None:
        """Stop the capture from another thread (``on_kill``): its children, its table reads, and any next table."""
        self._cancelled = True
        self.children.terminate_all()
        self.cancel_readers()

    def cancel_readers(self) -> None:
        for conn in list(self.reader_conns):
            try:
                conn.cancel()
            except psycopg2.Error:
                pass  # already gone

    def check_cancelled(self) -> None:
        if self._cancelled:
            raise DumpError("capture cancelled")

    # -- what a capture opens ------------------------------------------------------------
    def open_snapshot(self) -> SnapshotSession:
        """The capture lock and one exported snapshot of the source, until the session is closed."""
        return SnapshotSession(self.target, logger=self.log)

    def pg_dump(self) -> PgDump:
        return PgDump(self.target, self.tools, self.compression, logger=self.log, children=self.children)

    def schema_sha256(self, session: SnapshotSession) -> str:
        """sha256 of the schema as ``session``'s snapshot sees it (``pg_dump --schema-only``)."""
        return schema_sha256(self.target, self.tools, session.info.exported_id, children=self.children, logger=self.log)

    # -- local files ---------------------------------------------------------------------
    def state(self, backup_id: str) -> RowKeyState:
        return RowKeyState(self.state_root, backup_id)

    def new_id(self, kind: str) -> str:
        """A fresh id for a backup starting now; never waits for the clock.

        ``new_backup_id`` makes ids unique (a random suffix); should it give one already
        used on this machine — ids that are only unique per second — the next second's
        is taken instead, so no local copy or row-key state is ever overwritten.
        """
        at = datetime.now(timezone.utc)
        while True:
            backup_id = new_backup_id(kind, at)
            if not (self.local_dir / self.layout.object_path(kind, backup_id)).exists() and not self.state(backup_id).dir.exists():
                return backup_id
            at += timedelta(seconds=1)

    def prune_state(self, keep: set[str], newest: int = 3) -> None:
        """Drop old row-key states: an incremental's parent is always one of the newest backups.

        The newest few are kept, not just ``keep``, because a capture that is not yet
        committed (or never will be) must not take its parent's state from a concurrent
        or later incremental.  "Newest" is when the state was written, not what its id
        says: ids need not sort by time.
        """
        if not self.state_root.is_dir():
            return
        states = sorted((e for e in self.state_root.iterdir() if e.is_dir()), key=lambda e: e.stat().st_mtime)
        for entry in states[:-newest]:
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
