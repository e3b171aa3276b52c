"""The system under test, driven as the DAGs drive it: capture, publish to an rclone remote, restore one point.

Each call says what happened as an outcome instead of raising when the project *refused*
(an error of its own with a reason), because refusing is a correct answer; anything else
it raises — a crash is not a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chain_steps import LAYOUT, publish
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.model.catalog import Catalog
from pgbackup.model.manifest import BackupManifest
from pgbackup.postgres.target import PgTarget, tools_for_server
from pgbackup.restore.chain import ChainRestore, RestoreError, choose_chain
from rclone_provider.client import Rclone, RemoteConfig


@dataclass(frozen=True)
class Refusal:
    """The project declined with a reason: an acceptable answer, counted but not a failure."""

    step: str
    error: BaseException

    def __str__(self) -> str:
        return f"{self.step} refused: {type(self.error).__name__}: {self.error}"


def is_project_error(exc: BaseException) -> bool:
    """An error class of the library's own (DumpError, SourceError, …): a worded refusal, not a crash."""
    return type(exc).__module__.startswith("pgbackup.")


class BackupRig:
    """One source's captures (local copies and row-key state under ``work``) published to a local rclone remote."""

    def __init__(self, source: PgTarget, work: Path) -> None:
        num, version = source.server_version()
        self.capture = BackupCapture(source, tools_for_server(num), Compression(level=1, threads=1),
                                     local_dir=work / "local", prefix=LAYOUT.prefix, server_version=version)
        self.store = Rclone(RemoteConfig.from_extra("backup_remote", {"type": "local", "root": str(work / "remote")}))
        self.newest: BackupManifest | None = None

    def back_up(self, kind: str) -> BackupManifest | Refusal:
        """A full, or an incremental on the newest committed backup (which the capture may promote to a full)."""
        try:
            captured = self.capture.full() if kind == "full" else self.capture.incremental(self.newest)
        except Exception as exc:
            if not is_project_error(exc):
                raise
            return Refusal(f"{kind} capture", exc)
        self.newest = publish(captured, self.store)
        return self.newest

    def restore(self, backup_id: str, target: PgTarget) -> Refusal | None:
        """Restore the chain ending at ``backup_id`` into the empty ``target``; a RestoreError is a refusal."""
        try:
            chain = choose_chain(Catalog.load(self.store, LAYOUT), backup_id=backup_id)
            ChainRestore(self.store, LAYOUT).run(chain, target)
        except RestoreError as exc:
            return Refusal(f"restore of {backup_id}", exc)
        return None
