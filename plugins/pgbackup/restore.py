"""Restore a database to a backup point: the base full with pg_restore, then each incremental in order.

Every object is downloaded and its sha256 checked against its manifest before
the target is touched; at the end the target's per-table fingerprints and its
sequences must equal those recorded at the backup point, or the restore fails.
Needs only this library, rclone and the PostgreSQL client tools — no Airflow.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg2
from child_process import ChildRegistry
from psycopg2 import sql
from rclone_provider.client import RcloneError

from pgbackup.catalog import BrokenChainError, Catalog
from pgbackup.compression import (
    CHUNK,
    CorruptArchiveError,
    DecompressedStream,
    decompressed_chunks,
)
from pgbackup.delta import DeltaFormatError, DeltaReader
from pgbackup.fingerprint import (
    pin_output_settings,
    user_tables,
)
from pgbackup.layout import BackupLayout
from pgbackup.lease import Lease
from pgbackup.manifest import BackupManifest
from pgbackup.postgres import PgTarget, PgTools, SourceError, tools_for_server
from pgbackup.restore_check import check_restored, restore_sequences

log = logging.getLogger(__name__)


class RestoreError(RuntimeError):
    """The restore cannot start or did not give the backed-up state; the message says which backup or table."""


class ObjectUnavailable(RestoreError):
    """An object could not be read whole from this remote; nothing was applied, another copy may serve."""


def choose_chain(catalog: Catalog, *, backup_id: str | None = None, at: datetime | None = None) -> list[BackupManifest]:
    """The backups to apply, base full first: to ``backup_id``, to the newest at or before ``at``, or to the newest."""
    if backup_id and at:
        raise RestoreError("give either a backup id or a time, not both")
    if backup_id:
        point = catalog.get(backup_id)
    elif at:
        point = catalog.latest_at(at)
    elif catalog.backups:
        point = catalog.backups[-1]
    else:
        raise RestoreError("the remote holds no backups")
    try:
        return catalog.chain(point.id)
    except BrokenChainError as exc:
        raise RestoreError(str(exc)) from None


@dataclass
class RestoreReport:
    backup_id: str
    chain: list[str]
    seconds: float
    tables: int
    rows: int
    steps: dict[str, float] = field(default_factory=dict)


def fetch_verified(store, manifest: BackupManifest, dest: Path, logger: logging.Logger) -> Path:
    """Download one backup's object and check its size and sha256 against the manifest."""
    digest, size = hashlib.sha256(), 0
    try:
        with store.open_read(manifest.artifact.path) as stream, open(dest, "wb") as out:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
    except (RcloneError, FileNotFoundError) as exc:
        raise ObjectUnavailable(f"backup {manifest.id}: cannot read {manifest.artifact.path} from the remote ({exc})") from None
    if size != manifest.artifact.bytes or digest.hexdigest() != manifest.artifact.sha256:
        raise ObjectUnavailable(
            f"backup {manifest.id}: {manifest.artifact.path} is corrupt ({size} bytes, sha256 {digest.hexdigest()[:16]}…; "
            f"the manifest says {manifest.artifact.bytes} bytes, sha256 {manifest.artifact.sha256[:16]}…)"
        )
    logger.info("Downloaded and verified %s (%s bytes)", manifest.artifact.path, size)
    return dest


class ChainRestore:
    """Restores a chain into one target database; ``terminate()`` stops pg_restore."""

    def __init__(self, store, layout: BackupLayout, *, pg_bin_dir: str | None = None, logger: logging.Logger | None = None) -> None:
        self.store = store
        self.layout = layout
        self.pg_bin_dir = pg_bin_dir
        self.log = logger or log
        self.children = ChildRegistry()

    def terminate(self) -> None:
        self.children.terminate_all()
        terminate = getattr(self.store, "terminate", None)
        if terminate:
            terminate()

    def prepare_target(self, target: PgTarget, chain: list[BackupManifest], *, clean: bool) -> PgTools:
        """Check the target can take this backup; create it if missing; with ``clean``, recreate it empty."""
        full = chain[0]
        maintenance = target.with_database("postgres")
        try:
            version_num, version = maintenance.server_version()
        except SourceError as exc:
            raise RestoreError(f"restore target: {exc}") from None
        backup_major = int(full.server_version.split(".")[0])
        if version_num // 10000 < backup_major:
            raise RestoreError(
                f"the target server runs PostgreSQL {version}, older than the backup's {full.server_version}; "
                f"restore into PostgreSQL {backup_major} or newer"
            )
        exists, tables = self._target_state(target, maintenance)
        if exists and tables and not clean:
            raise RestoreError(
                f"target database {target.describe()} is not empty ({tables} tables); give --clean to replace its contents"
            )
        if exists and clean:
            self.log.warning("Dropping and recreating target database %s (--clean)", target.describe())
            self._admin(maintenance, sql.SQL("DROP DATABASE {}").format(sql.Identifier(target.dbname)))
            exists = False
        if not exists:
            self._admin(maintenance, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.dbname)))
        return tools_for_server(max(version_num, backup_major * 10000), self.pg_bin_dir)

    @staticmethod
    def _admin(maintenance: PgTarget, statement: sql.Composable) -> None:
        conn = maintenance.connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        except psycopg2.Error as exc:
            raise RestoreError(f"on the target server: {str(exc).strip().splitlines()[0]}") from None
        finally:
            conn.close()

    @staticmethod
    def _target_state(target: PgTarget, maintenance: PgTarget) -> tuple[bool, int]:
        conn = maintenance.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.dbname,))
                if not cur.fetchone():
                    return False, 0
        finally:
            conn.close()
        conn = target.connect()
        try:
            with conn.cursor() as cur:
                return True, len(user_tables(cur))
        finally:
            conn.close()

    def run(self, chain: list[BackupManifest], target: PgTarget, *, jobs: int = 1, clean: bool = False, work_dir: str | None = None) -> RestoreReport:
        started = time.monotonic()
        point = chain[-1]
        steps: dict[str, float] = {}
        self.log.info("Restoring %s into %s: %s", point.id, target.describe(), " -> ".join(m.id for m in chain))
        tools = self.prepare_target(target, chain, clean=clean)
        with Lease(self.store, self.layout, [m.id for m in chain], purpose="restore"), \
                tempfile.TemporaryDirectory(prefix="pgbackup-restore-", dir=work_dir) as tmp:
            clock = time.monotonic()
            files = [fetch_verified(self.store, m, Path(tmp, f"{m.id}{Path(m.artifact.path).suffix}"), self.log) for m in chain]
            steps["download and verify"] = time.monotonic() - clock
            clock = time.monotonic()
            ArchiveRestore(tools, logger=self.log, children=self.children).run(
                files[0], target, expected_uncompressed=chain[0].uncompressed_bytes, jobs=jobs, work_dir=tmp
            )
            steps[f"pg_restore {chain[0].id}"] = time.monotonic() - clock
            for manifest, path in zip(chain[1:], files[1:]):
                clock = time.monotonic()
                apply_incremental(path, manifest, target, self.log)
                steps[f"apply {manifest.id}"] = time.monotonic() - clock
        clock = time.monotonic()
        restore_sequences(target, point)
        tables, rows = check_restored(target, point, jobs=jobs)
        steps["check fingerprints"] = time.monotonic() - clock
        report = RestoreReport(point.id, [m.id for m in chain], time.monotonic() - started, tables, rows, steps)
        self.log.info("Restored %s: %s tables, %s rows, fingerprints match, %.1fs", point.id, tables, rows, report.seconds)
        return report


class ArchiveRestore:
    """Decompress a full backup's ``.dump.zst`` to a temporary file and ``pg_restore`` it.

    A file, not a pipe, because parallel pg_restore (``jobs`` > 1) needs to seek.
    """

    def __init__(self, tools: PgTools, *, logger: logging.Logger | None = None, children: ChildRegistry | None = None) -> None:
        self.tools = tools
        self.log = logger or log
        self.children = children or ChildRegistry()

    def terminate(self) -> None:
        self.children.terminate_all()

    def run(self, archive: str | Path, target: PgTarget, *, expected_uncompressed: int | None = None, jobs: int = 1, work_dir: str | None = None) -> None:
        with tempfile.NamedTemporaryFile(prefix="pgbackup-", suffix=".dump", dir=work_dir) as plain, open(archive, "rb") as compressed:
            for chunk in decompressed_chunks(compressed, expected_bytes=expected_uncompressed, source=str(archive)):
                plain.write(chunk)
            plain.flush()
            argv = [self.tools.pg_restore, "--no-password", "--exit-on-error", f"--jobs={jobs}", f"--dbname={target.dbname}", plain.name]
            self.log.info("pg_restore %s of %s into %s (%s jobs)", self.tools.version, archive, target.describe(), jobs)
            with target.libpq_env() as env:
                child = self.children.start(argv, env=env, log=self.log, stdout=None)
                try:
                    with child:
                        code = child.wait()
                finally:
                    self.children.forget(child)
        if code != 0:
            last = child.stderr_tail.splitlines()[-1:] or [f"exit code {code}"]
            raise RestoreError(f"pg_restore into {target.describe()} failed: {last[0]}")


def apply_incremental(path: Path, manifest: BackupManifest, target: PgTarget, logger: logging.Logger) -> None:
    """Apply one incremental's sections in one transaction, with triggers and foreign keys held off.

    ``session_replication_role = replica`` is what pg_restore's own
    ``--disable-triggers`` relies on: the rows arrive in an order foreign keys
    would refuse, but the end state is one consistent snapshot.
    """
    conn = target.connect(application_name="pgbackup restore")
    counts = {"deleted": 0, "upserted": 0, "replaced": 0}
    try:
        with conn.cursor() as cur, open(path, "rb") as compressed:
            try:
                cur.execute("SET LOCAL session_replication_role = replica")
            except psycopg2.Error as exc:
                raise RestoreError(
                    f"applying incrementals needs a role allowed to set session_replication_role (a superuser, or "
                    f"GRANT SET ON PARAMETER session_replication_role on PostgreSQL 15+): {str(exc).strip().splitlines()[0]}"
                ) from None
            pin_output_settings(cur)
            stream = DecompressedStream(compressed, expected_bytes=manifest.uncompressed_bytes, source=str(path))
            reader = DeltaReader(stream, source=manifest.artifact.path)
            for header, data in reader.sections():
                _apply_section(cur, header, data, counts)
        conn.commit()
    except (psycopg2.Error, CorruptArchiveError, DeltaFormatError) as exc:
        conn.rollback()
        raise RestoreError(f"applying incremental {manifest.id} failed: {str(exc).strip().splitlines()[0]}") from None
    finally:
        conn.close()
    logger.info("Applied %s: %s rows deleted, %s upserted, %s whole-table rows", manifest.id, counts["deleted"], counts["upserted"], counts["replaced"])


def _apply_section(cur, header: dict, data, counts: dict[str, int]) -> None:
    table = sql.Identifier(header["schema"], header["name"])
    columns = sql.SQL(", ").join(map(sql.Identifier, header["columns"]))
    keys = [sql.Identifier(k) for k in header["key_columns"]]
    action = header["action"]
    if action == "delete":
        cur.execute("CREATE TEMP TABLE pgb_deleted_keys (k text)")
        cur.copy_expert("COPY pgb_deleted_keys FROM STDIN", data)
        key_text = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.SQL("t.") + k for k in keys))
        cur.execute(sql.SQL("DELETE FROM ONLY {} AS t WHERE {} IN (SELECT k FROM pgb_deleted_keys)").format(table, key_text))
        counts["deleted"] += cur.rowcount
        cur.execute("DROP TABLE pgb_deleted_keys")
    elif action == "upsert":
        cur.execute(sql.SQL("CREATE TEMP TABLE pgb_rows AS SELECT {} FROM {} WITH NO DATA").format(columns, table))
        cur.copy_expert(sql.SQL("COPY pgb_rows ({}) FROM STDIN").format(columns).as_string(cur), data)
        match = sql.SQL(" AND ").join(sql.SQL("t.{k} = u.{k}").format(k=k) for k in keys)
        cur.execute(sql.SQL("DELETE FROM ONLY {} AS t USING pgb_rows AS u WHERE {}").format(table, match))
        cur.execute(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM pgb_rows").format(table, columns, columns))
        counts["upserted"] += cur.rowcount
        cur.execute("DROP TABLE pgb_rows")
    elif action == "replace":
        cur.execute(sql.SQL("DELETE FROM ONLY {}").format(table))
        cur.copy_expert(sql.SQL("COPY {} ({}) FROM STDIN").format(table, columns).as_string(cur), data)
        counts["replaced"] += cur.rowcount
    else:
        raise RestoreError(f"unknown section action {action!r} for {header.get('table')}")
