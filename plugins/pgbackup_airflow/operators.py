"""Operators for the backup DAGs: dump, archive check, manifest commit, retention, drill, restore to staging."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import AssetAlias, BaseOperator
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowNotFoundException,
    AirflowSkipException,
)

from pgbackup.capture.archive import check_archive, check_delta
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.captured import CapturedBackup
from pgbackup.capture.compression import Compression
from pgbackup.config.connections import ConnectionMissing, ConnectionNotSet, connection_fields, env_var
from pgbackup.config.settings import DEFAULT_REMOTE_CONN_ID
from pgbackup.model.catalog import Catalog
from pgbackup.model.identity import SourceIdentity
from pgbackup.model.layout import BackupLayout
from pgbackup.model.manifest import BackupManifest
from pgbackup.policy.retention import RetentionPolicy, apply_plan, plan_retention
from pgbackup.postgres.sources import source_identity_of
from pgbackup.postgres.target import tools_for_server
from pgbackup.restore.chain import ChainRestore, RestoreRefused, choose_chain
from pgbackup.restore.drill import IN_FLIGHT_GRACE, NothingToDrill, RestoreDrill
from pgbackup.restore.lease import leased_backups
from pgbackup.storage.store import LocalStore
from pgbackup_airflow import metrics
from pgbackup_airflow.assets import backup_asset
from pgbackup_airflow.connections import drill_server, source_identity, source_target
from rclone_provider.child_process import ChildRegistry, StopsChildrenOnKill
from rclone_provider.hooks.rclone import RcloneHook


def require_one_of(what: str, value: Any, choices: tuple[str, ...]) -> None:
    """A templated choice field is only known at run time: refuse anything else there, saying what is allowed."""
    if value not in choices:
        raise AirflowException(f"{what} must be {' or '.join(repr(c) for c in choices)}, not {value!r}")


class _KillAwareOperator(StopsChildrenOnKill, BaseOperator):
    """An operator of this package: ``on_kill`` stops what ``execute`` handed to ``stoppable()``, a kill is never a success.

    Every child process an operator runs is started through a ``ChildRegistry`` of the
    object it hands over (the capture's, the rclone client's behind a hook, the restore's,
    or a registry of its own), so nothing it starts escapes the kill.
    """

    def __init__(self, *, database: str | None = None, only_database: str | None = None, **kwargs) -> None:
        # An __init__ of its own is needed anyway: without one, Airflow's metaclass puts BaseOperator.__init__ in this
        # class's __dict__, and .partial() then takes its inlets=None/outlets=None as this class's defaults —
        # a mapped subclass (the drill) then fails before it starts ('NoneType' object is not iterable).
        super().__init__(**kwargs)
        self.database = database  # which of the configured databases this instance works for (logs, alerts, metrics)
        self.only_database = only_database

    def skip_unless_asked_for(self, doing: str) -> None:
        """Mapped over the databases, an instance skips itself when the run asks for another one (``only_database``)."""
        if self.only_database and self.only_database != self.database:
            raise AirflowSkipException(f"this run {doing} database {self.only_database!r}, not {self.database!r}")


class _BackupStoreOperator(_KillAwareOperator):
    """An operator that works on one source's backups: where they are (the rclone remote and the local copies)
    and whose they are (the source connection, which tells this installation's backups from another's).

    The fields every such operator takes, declared once; each subclass lists them in its ``template_fields``.
    """

    def __init__(
        self,
        *,
        postgres_conn_id: str = "backup_source",
        rclone_conn_id: str = DEFAULT_REMOTE_CONN_ID,
        local_dir: str,
        prefix: str = "database",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.postgres_conn_id = postgres_conn_id
        self.rclone_conn_id = rclone_conn_id
        self.local_dir = local_dir
        self.prefix = prefix


class CaptureBackupOperator(_BackupStoreOperator):
    """Capture a backup of the source into the local directory: ``kind="full"`` or ``kind="incremental"``.

    The remote is listed first, so a broken remote connection fails before
    anything is dumped.  A full is ``pg_dump`` (custom format) streamed through
    zstd and sha256.  An incremental holds the rows changed since the newest
    backup *of this source* on the remote (its identity is read first; other
    sources' backups under the prefix are never a parent), and becomes a full
    when it must (no full yet, a broken chain, schema changed, ...), saying why
    in the log and the manifest.  The returned dict (also pushed as separate XComs) is what upload,
    verify and the manifest need.  Mapped over the databases, an instance skips itself (and so its
    upload, verify and commit) when the run asks for another database (``only_database``).
    """

    template_fields: Sequence[str] = ("kind", "postgres_conn_id", "rclone_conn_id", "local_dir", "prefix", "database", "only_database")

    def __init__(
        self,
        *,
        kind: str = "full",
        zstd_level: int = 6,
        zstd_threads: int = 0,
        pg_bin_dir: str | None = None,
        **kwargs,
    ) -> None:
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.kind = kind
        self.zstd_level = zstd_level
        self.zstd_threads = zstd_threads
        self.pg_bin_dir = pg_bin_dir

    def execute(self, context) -> dict[str, Any]:
        require_one_of("kind", self.kind, ("full", "incremental"))
        self.skip_unless_asked_for("backs up")
        remote = self._checked_remote()
        target = source_target(self.postgres_conn_id)
        identity = source_identity_of(target)  # read first: it decides whose backups the capture builds on
        version_num, version = target.server_version()
        tools = tools_for_server(version_num, self.pg_bin_dir)
        self.log.info("Source %s runs PostgreSQL %s; using pg_dump %s from %s", target.describe(), version, tools.version, tools.bin_dir)
        parent, reason = self._parent(remote, identity) if self.kind == "incremental" else (None, None)
        capture = self.stoppable(BackupCapture(
            target, tools, Compression(self.zstd_level, self.zstd_threads),
            local_dir=Path(self.local_dir), prefix=self.prefix, server_version=version, logger=self.log,
        ))
        try:
            if self.kind == "full":
                captured = capture.full()
            elif reason:
                self.log.warning("Taking a full backup instead of an incremental: %s", reason)
                captured = capture.full_instead_of_incremental(reason)
            else:
                captured = capture.incremental(parent)
        except Exception:
            self.fail_if_killed()  # pg_dump stopped by the kill fails as it may: the task says it was killed
            raise
        self.fail_if_killed()
        result = captured.to_dict()
        # The capture records the source itself; this covers a capture that does not (yet).
        result["details"] = {"source": identity.to_dict(), **result["details"]}
        return result

    def _checked_remote(self):
        """The remote, listed once before anything is dumped: a broken connection fails here, naming its cause, not after pg_dump."""
        try:
            remote = self.stoppable(RcloneHook(self.rclone_conn_id)).get_conn()
            remote.check_readable()
        except Exception as exc:
            cause = str(exc)
            if isinstance(exc, AirflowNotFoundException):
                cause = _undefined_connection_cause(self.rclone_conn_id) or cause
            raise AirflowFailException(f"remote connection {self.rclone_conn_id!r} cannot be used, nothing was dumped: {cause}") from exc
        return remote

    def _parent(self, remote, identity: SourceIdentity) -> tuple[BackupManifest | None, str | None]:
        """The newest backup of this source on the remote, or the reason an incremental cannot build on it."""
        catalog = Catalog.load(remote, BackupLayout(self.prefix)).for_source(identity)
        if catalog.foreign_warning():
            self.log.warning("%s", catalog.foreign_warning())
        parent, reason = catalog.incremental_parent()
        if parent is None and not catalog.backups:
            self.log.warning("No full backup marker found for %s: taking a full backup first", identity.database)
        return parent, reason


class CheckArchiveOperator(_KillAwareOperator):
    """Fail unless the captured object reads back whole: ``pg_restore --list`` for a full, every frame for an incremental."""

    template_fields: Sequence[str] = ("captured",)

    def __init__(self, *, captured: dict[str, Any] | Any, pg_bin_dir: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.captured = captured
        self.pg_bin_dir = pg_bin_dir

    def execute(self, context) -> dict[str, Any]:
        backup = CapturedBackup.from_dict(self.captured)
        if backup.kind == "full":
            tools = tools_for_server(_version_num(backup.server_version), self.pg_bin_dir)
            nothing_captured = not backup.details.get("tables") and not backup.details.get("sequences")
            # pg_restore stopped by the kill would read as a corrupt archive: the check raises ProcessCancelled instead.
            check = check_archive(backup.path, tools, expected_uncompressed=backup.uncompressed_bytes, logger=self.log,
                                  may_be_empty=nothing_captured, children=self.stoppable(ChildRegistry()))
        else:
            check = check_delta(backup.path, expected_uncompressed=backup.uncompressed_bytes, logger=self.log)
        self.fail_if_killed()
        return {"toc_entries": check.toc_entries, "table_data_entries": check.table_data_entries}


class CommitManifestOperator(_BackupStoreOperator):
    """Write the backup's manifest, last: to the remote (read back and compared), then beside the local copy.

    Only now does the backup exist; a run that stops before this step leaves an
    orphan object that no catalog lists and retention later removes.  Then it
    emits the backup's asset event (``pgbackup_airflow.assets``, through the
    ``AssetAlias`` the task declares as its outlet) and its metrics.
    """

    template_fields: Sequence[str] = ("captured", "verification", "rclone_conn_id", "local_dir", "prefix", "database")

    def __init__(
        self,
        *,
        captured: dict[str, Any] | Any,
        verification: dict[str, Any] | Any,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.captured = captured
        self.verification = verification

    def execute(self, context) -> dict[str, Any]:
        backup = CapturedBackup.from_dict(self.captured)
        layout = BackupLayout(self.prefix)
        manifest = backup.manifest(
            verified_method=self.verification["method"], extra_details={"dag_id": context["dag"].dag_id, "run_id": context["run_id"]}
        )
        path = layout.manifest_path(manifest.kind, manifest.id)
        body = manifest.to_json()
        client = self.stoppable(RcloneHook(self.rclone_conn_id)).get_conn()
        if client.stat(path) is not None:
            # Never replace a manifest: a retried commit finds its own (same object), anything else is another writer's.
            stored = BackupManifest.from_json(client.read_bytes(path), source=path)
            if (stored.id, stored.artifact) != (manifest.id, manifest.artifact):
                raise AirflowFailException(f"manifest {path} already exists for another object ({stored.artifact.path}, sha256 "
                                           f"{stored.artifact.sha256}): another writer committed it; nothing was overwritten")
            self.log.info("Manifest %s is already committed (a retried commit): kept as it is", path)
            body = client.read_bytes(path)
        else:
            client.put_bytes(body, path)
        if client.read_bytes(path) != body:
            raise AirflowException(f"manifest {path} read back from the remote differs from what was written")
        self.fail_if_killed()
        LocalStore(self.local_dir).put_bytes(body, path)
        self.log.info("Committed %s backup %s: manifest %s (%s bytes stored, sha256 %s)", manifest.kind, manifest.id, path, backup.bytes, backup.sha256)
        self._announce(context, manifest)
        return manifest.to_dict()

    def _announce(self, context, manifest: BackupManifest) -> None:
        """The asset event of this database's backups on this remote, and the backup's metrics."""
        asset = backup_asset(self.rclone_conn_id, self.prefix, manifest.kind)
        extra = {"id": manifest.id, "kind": manifest.kind, "bytes": manifest.artifact.bytes, "sha256": manifest.artifact.sha256,
                 "database": self.database or self.prefix, "remote": self.rclone_conn_id}
        for outlet in self.outlets:
            if isinstance(outlet, AssetAlias):
                context["outlet_events"][outlet].add(asset, extra=extra)
        metrics.backup_committed(self.database or self.prefix, manifest.kind, manifest.artifact.bytes, manifest.finished_at - manifest.started_at)


class RetentionOperator(_BackupStoreOperator):
    """Apply a retention policy to the remote (``target="remote"``) or to the local copies (``target="local"``).

    The plan, with a reason for every backup, is logged before anything is
    deleted; with ``dry_run`` nothing is.
    """

    template_fields: Sequence[str] = ("target", "postgres_conn_id", "rclone_conn_id", "local_dir", "prefix", "dry_run")

    def __init__(
        self,
        *,
        target: str,
        policy: RetentionPolicy,
        dry_run: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.policy = policy
        self.dry_run = dry_run

    def execute(self, context) -> dict[str, Any]:
        require_one_of("retention target", self.target, ("remote", "local"))
        layout = BackupLayout(self.prefix)
        store = self.stoppable(RcloneHook(self.rclone_conn_id)).get_conn() if self.target == "remote" else LocalStore(self.local_dir)
        # Only this source's backups are planned: another installation's are never deleted.  Unreachable source
        # with several sources stored: Catalog.for_source refuses (SourceAmbiguous) rather than guess.
        catalog = Catalog.load(store, layout).for_source(source_identity(self.postgres_conn_id))
        for problem in catalog.problems:
            self.log.warning("Catalog problem: %s", problem)
        if catalog.foreign_warning():
            self.log.warning("%s", catalog.foreign_warning())
        now = datetime.now(timezone.utc)
        plan = plan_retention(catalog.backups, self.policy, now, orphans=catalog.orphans, leased=leased_backups(store, layout, now))
        self.log.info("Retention plan for the %s copies (%s backups):", self.target, len(plan.decisions))
        plan.log_to(self.log)
        dry_run = self.dry_run in (True, "True", "true", "1")
        deleted = apply_plan(plan, catalog.backups, store, layout, self.log, dry_run=dry_run)
        return {"target": self.target, "kept": plan.kept, "deleted": deleted, "orphans": list(plan.orphans_to_delete), "dry_run": dry_run}


class RestoreDrillOperator(_KillAwareOperator):
    """Restore the newest backup point (or ``backup_id``) into a scratch database, check it, drop it, record the result.

    Fails — so the failure alert fires — when the restore or its fingerprint check
    fails.  Mapped over the databases, an instance skips itself when the run asks
    for another one (``only_database``).
    """

    template_fields: Sequence[str] = ("backup_id", "database", "only_database", "drill_conn_id", "source_conn_id", "rclone_conn_id", "prefix")

    def __init__(
        self,
        *,
        backup_id: str | None = None,
        several_databases: bool = False,
        drill_conn_id: str = "backup_drill",
        source_conn_id: str = "backup_source",
        rclone_conn_id: str = DEFAULT_REMOTE_CONN_ID,
        prefix: str = "database",
        jobs: int = 2,
        pg_bin_dir: str | None = None,
        in_flight: timedelta = IN_FLIGHT_GRACE,
        **kwargs,
    ) -> None:
        kwargs.setdefault("database", "database")
        super().__init__(**kwargs)
        self.in_flight = in_flight  # how long the first backup's objects may wait for its manifest (catalog_never_used)
        self.backup_id = backup_id
        self.several_databases = several_databases
        self.drill_conn_id = drill_conn_id
        self.source_conn_id = source_conn_id
        self.rclone_conn_id = rclone_conn_id
        self.prefix = prefix
        self.jobs = jobs
        self.pg_bin_dir = pg_bin_dir

    def execute(self, context) -> dict[str, Any]:
        self.skip_unless_asked_for("drills")
        if self.backup_id and self.several_databases and not self.only_database:
            # Backup ids repeat across databases; drilling "the same id" everywhere would record false failures.
            raise AirflowFailException(f"backup_id {self.backup_id!r} given without database: with several databases, name both")
        server = drill_server(self.drill_conn_id, self.source_conn_id)
        store = self.stoppable(RcloneHook(self.rclone_conn_id)).get_conn()
        drill = self.stoppable(RestoreDrill(store, BackupLayout(self.prefix), server, pg_bin_dir=self.pg_bin_dir, logger=self.log,
                                            source=source_identity(self.source_conn_id), in_flight=self.in_flight))
        try:
            result = drill.run(backup_id=self.backup_id or None, jobs=self.jobs)
        except NothingToDrill as exc:
            self.log.info("Nothing to drill yet for %s: %s", self.database, exc)
            raise AirflowSkipException(str(exc)) from None
        self.fail_if_killed()
        metrics.drill_finished(self.database, result.ok, result.seconds)
        if not result.ok:
            raise AirflowException(f"restore drill of {self.database} {result.point_text} failed: {result.error}")
        return {"database": self.database, "backup_id": result.backup_id, "seconds": result.seconds, "chain": result.chain}


def _undefined_connection_cause(conn_id: str) -> str | None:
    """Why Airflow says a connection "isn't defined" when its ``AIRFLOW_CONN_*`` variable is set (bad JSON, say); None if it is unset."""
    try:
        connection_fields(conn_id)
    except ConnectionNotSet:
        return None
    except ConnectionMissing as exc:
        return str(exc)
    except ValueError as exc:
        return f"{env_var(conn_id)} cannot be read: {exc}"
    return None


def _version_num(version: str) -> int:
    major, _, minor = version.partition(".")
    return int(major) * 10000 + int(minor or 0)


class StagingRestoreOperator(_KillAwareOperator):
    """Restore a backup point into a staging database: the everyday refresh, never production.

    The target is an Airflow connection id from ``allowed_conn_ids`` (``BACKUP_STAGING_CONN_IDS``), never a URL typed
    into a form.  Before anything is read from the remote or changed on the target, ``confirm`` must equal the target's
    database name.  The restore itself is the library's: it refuses a non-empty target without ``clean``, and a target
    that is the backup's source or any configured source database (``protected``) — with no way around it here:
    replacing a source is the CLI's ``--replace-source``.
    """

    template_fields: Sequence[str] = ("target_conn_id", "backup_id", "database", "confirm", "clean")

    def __init__(
        self,
        *,
        target_conn_id: str | None,
        confirm: str | None,
        allowed_conn_ids: Sequence[str],
        sources: Sequence[tuple[str, str, str]],
        backup_id: str | None = None,
        clean: bool | str = False,
        rclone_conn_id: str = DEFAULT_REMOTE_CONN_ID,
        jobs: int = 2,
        pg_bin_dir: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.target_conn_id = target_conn_id
        self.confirm = confirm
        self.allowed_conn_ids = tuple(allowed_conn_ids)
        self.sources = tuple(tuple(s) for s in sources)  # (name, connection id, prefix) of every configured database
        self.backup_id = backup_id
        self.clean = clean
        self.rclone_conn_id = rclone_conn_id
        self.jobs = jobs
        self.pg_bin_dir = pg_bin_dir

    def execute(self, context) -> dict[str, Any]:
        name, source_conn_id, prefix = self._source()
        target = self._checked_target()
        store = self.stoppable(RcloneHook(self.rclone_conn_id)).get_conn()
        catalog = Catalog.load(store, BackupLayout(prefix)).for_source(source_identity(source_conn_id))
        try:
            chain = choose_chain(catalog, backup_id=self.backup_id or None)
        except LookupError as exc:
            raise AirflowFailException(f"{name}: {exc}; nothing was changed on {target.describe()}") from None
        protected = tuple((n, identity) for n, conn_id, _ in self.sources if (identity := source_identity(conn_id)) is not None)
        restore = self.stoppable(ChainRestore(store, BackupLayout(prefix), pg_bin_dir=self.pg_bin_dir, logger=self.log))
        try:
            report = restore.run(chain, target, jobs=self.jobs, clean=self.clean in (True, "True", "true", "1"), protected=protected)
        except RestoreRefused as exc:
            raise AirflowFailException(f"restore into staging {self.target_conn_id!r} refused: {exc}") from None
        self.fail_if_killed()
        self.log.info("Staging %s (%s) now holds %s of %s: %s tables, %s rows, fingerprints match",
                      self.target_conn_id, target.describe(), report.backup_id, name, report.tables, report.rows)
        return {"target": self.target_conn_id, "database": name, "backup_id": report.backup_id, "chain": report.chain,
                "seconds": round(report.seconds, 1), "tables": report.tables, "rows": report.rows}

    def _source(self) -> tuple[str, str, str]:
        if not self.database and len(self.sources) > 1:
            raise AirflowFailException(f"several databases are configured ({', '.join(s[0] for s in self.sources)}): choose one with database")
        for source in self.sources:
            if not self.database or source[0] == self.database:
                return source
        raise AirflowFailException(f"no database called {self.database!r}; configured: {', '.join(s[0] for s in self.sources)}")

    def _checked_target(self):
        """The staging target, or a refusal naming what to give; nothing has been read or changed yet."""
        if not self.allowed_conn_ids:
            raise AirflowFailException("no staging target is configured: set BACKUP_STAGING_CONN_IDS to the connection ids restores may replace")
        if self.target_conn_id not in self.allowed_conn_ids:
            raise AirflowFailException(f"target {self.target_conn_id!r} is not a staging connection; allowed: {', '.join(self.allowed_conn_ids)}")
        if self.target_conn_id in {conn_id for _, conn_id, _ in self.sources}:
            raise AirflowFailException(f"target {self.target_conn_id!r} is a backup source's connection: restore a source with backupctl restore")
        target = source_target(self.target_conn_id)
        if self.confirm != target.dbname:
            raise AirflowFailException(
                f"confirm must be the target's database name, {target.dbname!r} (connection {self.target_conn_id!r}); "
                f"got {self.confirm!r}. Nothing was touched"
            )
        return target
