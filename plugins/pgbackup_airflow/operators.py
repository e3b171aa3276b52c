"""Operators for the backup DAGs: dump, archive check, manifest commit, retention."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from pgbackup import __version__
from pgbackup.archive import check_archive
from pgbackup.catalog import Catalog
from pgbackup.compression import Compression
from pgbackup.dump import DumpArtifact, PgDump
from pgbackup.layout import BackupLayout, new_backup_id
from pgbackup.manifest import BackupManifest, StoredArtifact, parse_utc, utc_iso
from pgbackup.postgres import tools_for_server
from pgbackup.retention import RetentionPolicy, apply_plan, plan_retention
from pgbackup.store import LocalStore
from pgbackup_airflow.connections import source_target
from rclone_provider.hooks.rclone import RcloneHook


class _KillAwareOperator(BaseOperator):
    """``on_kill`` stops the children; ``execute`` then raises so a killed task is never marked successful."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._running = None
        self._killed = False

    def on_kill(self) -> None:
        self._killed = True
        if self._running is not None:
            self._running.terminate()

    def _fail_if_killed(self) -> None:
        if self._killed:
            raise AirflowException(f"{self.task_id} was killed; its work is discarded")


class PgDumpOperator(_KillAwareOperator):
    """Dump the source database with pg_dump (custom format), compress with zstd and sha256 it, in one stream.

    The result lands under ``local_dir/<prefix>/<kind>/<id>.dump.zst``; the
    returned dict (pushed as separate XComs too) is what the upload, verify and
    manifest steps need.
    """

    template_fields: Sequence[str] = ("postgres_conn_id", "local_dir", "prefix")

    def __init__(
        self,
        *,
        postgres_conn_id: str = "backup_source",
        local_dir: str,
        prefix: str = "database",
        zstd_level: int = 3,
        zstd_threads: int = 0,
        pg_bin_dir: str | None = None,
        **kwargs,
    ) -> None:
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.postgres_conn_id = postgres_conn_id
        self.local_dir = local_dir
        self.prefix = prefix
        self.zstd_level = zstd_level
        self.zstd_threads = zstd_threads
        self.pg_bin_dir = pg_bin_dir

    def execute(self, context) -> dict[str, Any]:
        target = source_target(self.postgres_conn_id)
        version_num, version = target.server_version()
        tools = tools_for_server(version_num, self.pg_bin_dir)
        self.log.info("Source %s runs PostgreSQL %s; using pg_dump %s from %s", target.describe(), version, tools.version, tools.bin_dir)
        layout = BackupLayout(self.prefix)
        backup_id = new_backup_id("full", datetime.now(timezone.utc))
        object_path = layout.object_path("full", backup_id)
        self._running = PgDump(target, tools, Compression(self.zstd_level, self.zstd_threads), logger=self.log)
        artifact = self._running.run(Path(self.local_dir) / object_path, server_version=version)
        self._fail_if_killed()
        return {"backup_id": backup_id, "kind": "full", "object_path": object_path, **artifact.to_dict()}


class CheckArchiveOperator(_KillAwareOperator):
    """Fail unless the dump decompresses whole and ``pg_restore --list`` reads it (before anything is uploaded)."""

    template_fields: Sequence[str] = ("dump",)

    def __init__(self, *, dump: dict[str, Any] | Any, pg_bin_dir: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dump = dump
        self.pg_bin_dir = pg_bin_dir

    def execute(self, context) -> dict[str, Any]:
        artifact = _artifact(self.dump)
        server_num = _version_num(artifact.server_version)
        tools = tools_for_server(server_num, self.pg_bin_dir)
        check = check_archive(artifact.path, tools, expected_uncompressed=artifact.uncompressed_bytes, logger=self.log)
        self._fail_if_killed()
        return {"toc_entries": check.toc_entries, "table_data_entries": check.table_data_entries}


class CommitManifestOperator(_KillAwareOperator):
    """Write the backup's manifest, last: to the remote (read back and compared), then beside the local copy.

    Only now does the backup exist; a run that stops before this step leaves an
    orphan object that no catalog lists and retention later removes.
    """

    template_fields: Sequence[str] = ("dump", "verification", "rclone_conn_id", "local_dir", "prefix")

    def __init__(
        self,
        *,
        dump: dict[str, Any] | Any,
        verification: dict[str, Any] | Any,
        rclone_conn_id: str = RcloneHook.default_conn_name,
        local_dir: str,
        prefix: str = "database",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dump = dump
        self.verification = verification
        self.rclone_conn_id = rclone_conn_id
        self.local_dir = local_dir
        self.prefix = prefix

    def execute(self, context) -> dict[str, Any]:
        artifact = _artifact(self.dump)
        layout = BackupLayout(self.prefix)
        manifest = BackupManifest(
            id=self.dump["backup_id"],
            kind=self.dump["kind"],
            database=artifact.database,
            started_at=parse_utc(artifact.started_at),
            finished_at=parse_utc(artifact.finished_at),
            server_version=artifact.server_version,
            pg_dump_version=artifact.pg_dump_version,
            artifact=StoredArtifact(path=self.dump["object_path"], bytes=artifact.bytes, sha256=artifact.sha256),
            uncompressed_bytes=artifact.uncompressed_bytes,
            compression=artifact.compression,
            tool_version=__version__,
            verified={"at": utc_iso(datetime.now(timezone.utc)), "method": self.verification["method"]},
            details={"dag_id": context["dag"].dag_id, "run_id": context["run_id"]},
        )
        path = layout.manifest_path(manifest.kind, manifest.id)
        body = manifest.to_json()
        hook = RcloneHook(self.rclone_conn_id)
        self._running = hook
        client = hook.get_conn()
        client.put_bytes(body, path)
        if client.read_bytes(path) != body:
            raise AirflowException(f"manifest {path} read back from the remote differs from what was written")
        self._fail_if_killed()
        LocalStore(self.local_dir).write_bytes(path, body)
        self.log.info("Committed backup %s: manifest %s (%s bytes stored, sha256 %s)", manifest.id, path, artifact.bytes, artifact.sha256)
        return manifest.to_dict()

    def on_kill(self) -> None:
        self._killed = True
        if self._running is not None:
            self._running.send_sigterm()


class RetentionOperator(_KillAwareOperator):
    """Apply a retention policy to the remote (``target="remote"``) or to the local copies (``target="local"``).

    The plan, with a reason for every backup, is logged before anything is
    deleted; with ``dry_run`` nothing is.
    """

    template_fields: Sequence[str] = ("target", "rclone_conn_id", "local_dir", "prefix", "dry_run")

    def __init__(
        self,
        *,
        target: str,
        policy: RetentionPolicy,
        rclone_conn_id: str = RcloneHook.default_conn_name,
        local_dir: str,
        prefix: str = "database",
        dry_run: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.policy = policy
        self.rclone_conn_id = rclone_conn_id
        self.local_dir = local_dir
        self.prefix = prefix
        self.dry_run = dry_run

    def execute(self, context) -> dict[str, Any]:
        if self.target not in ("remote", "local"):
            raise AirflowException(f"retention target must be 'remote' or 'local', not {self.target!r}")
        layout = BackupLayout(self.prefix)
        store = RcloneHook(self.rclone_conn_id).get_conn() if self.target == "remote" else LocalStore(self.local_dir)
        catalog = Catalog.load(store, layout)
        for problem in catalog.problems:
            self.log.warning("Catalog problem: %s", problem)
        plan = plan_retention(catalog.backups, self.policy, datetime.now(timezone.utc), orphans=catalog.orphans)
        self.log.info("Retention plan for the %s copies (%s backups):", self.target, len(plan.decisions))
        plan.log_to(self.log)
        dry_run = self.dry_run in (True, "True", "true", "1")
        deleted = apply_plan(plan, catalog.backups, store, layout, self.log, dry_run=dry_run)
        return {"target": self.target, "kept": plan.kept, "deleted": deleted, "orphans": list(plan.orphans_to_delete), "dry_run": dry_run}


def _artifact(dump: dict[str, Any]) -> DumpArtifact:
    fields = DumpArtifact.__dataclass_fields__
    return DumpArtifact.from_dict({k: v for k, v in dict(dump).items() if k in fields})


def _version_num(version: str) -> int:
    major, _, minor = version.partition(".")
    return int(major) * 10000 + int(minor or 0)
