"""Capture a backup — full or incremental — from one snapshot of the source database.

A **full** backup is ``pg_dump`` of the exported snapshot.  While it runs, the same
snapshot is read — on a few connections that import it, side by side — for what the
next incremental needs: sequence values, a hash of the schema, and per table the
sorted primary keys with each row's hash (the *row-key state*, ``rowstate.py``,
kept locally under ``<local dir>/state``), from which the table's fingerprint is summed.
Materialized views and large objects are fingerprinted too; a role that may not read
the large objects fails the backup before ``pg_dump`` starts.

An **incremental** backup stores, per table, only what changed since its parent:
- rows whose ``xmin`` is at or after the parent snapshot's ``xmin`` (inserted or
  updated since; a few older ones may be re-sent, which is harmless), as upserts;
- keys present in the parent's row-key state and gone now, as deletes.  The current
  keys are read only when the row counts prove some parent rows are gone;
- for a table without a primary key, the whole table when a row changed or went missing.
Its row-key state and fingerprints are the parent's, adjusted by the changed and
deleted rows; a state that does not add up with its manifest or the source
promotes the capture to a full.

It promotes itself to a full backup — and says why in the log and the manifest
(``details["promoted_from_incremental"]``) — whenever it cannot prove the parent's
state plus the changed rows is the source now:

- no parent, a parent made by an older version (no source identity, no relation
  OIDs), another database or cluster (``pgbackup.model.identity``);
- **another history.**  ``xmin`` says "changed since the parent" only while every
  transaction since the parent's snapshot comes later in one line of history.
  A source put back from a file copy, a standby promoted after a failover, or a
  point-in-time recovery keep the system identifier but rewind that line: the
  transaction counter restarts from the copy's or the recovery point's, so rows
  written afterwards can carry ids *below* the parent's snapshot and would be
  read as old — silently missing — once the counter has caught up.  Every
  snapshot records its timeline (``pg_control_checkpoint()``, which a promotion or a
  recovery to a point in time changes) and its WAL position (``pg_current_wal_lsn()``,
  or the replayed position on a standby), which only moves forward in one history:
  another timeline, or a position behind the parent's, takes a full;
- a relation under a name the parent knew is not the same relation (OIDs differ:
  renamed, swapped, dropped and re-created) — names alone would apply one table's
  row-key state to another;
- the schema changed, or the rendering settings differ from the parent's;
- a materialized view was refreshed or changed, or the large objects changed:
  incrementals carry table rows only;
- the parent's row-key state is not on this machine, is of an older format, or
  does not add up.
Never a silently wrong restore.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from pgbackup import __version__
from pgbackup.capture.compression import Compression, HashingWriter
from pgbackup.capture.delta import DeltaWriter
from pgbackup.capture.dump import DumpError, PgDump, pg_dump_failure
from pgbackup.capture.rowstate import RowKeyState, StateMismatch, StateOrderError, capture_change
from pgbackup.model.identity import SourceIdentity
from pgbackup.model.layout import BackupLayout, new_backup_id
from pgbackup.model.manifest import BackupManifest, StoredArtifact, parse_utc, utc_iso
from pgbackup.postgres.fingerprint import (
    large_objects_fingerprint,
    read_sequences,
    relation_fingerprint,
    table_fingerprint,
)
from pgbackup.postgres.parallel import spread_over_connections
from pgbackup.postgres.snapshot import (
    SnapshotSession,
    TableRewritten,
    reading_table,
    storage_rewritten,
)
from pgbackup.postgres.tables import TableInfo, list_tables
from pgbackup.postgres.target import PgTarget, PgTools
from pgbackup.storage.scratch import scratch_dir
from rclone_provider.child_process import ChildProcess

log = logging.getLogger(__name__)
XID_WRAP = 1 << 32
# Past this many transactions since the parent, 32-bit xmin values become ambiguous: take a full.
MAX_XID_DISTANCE = 1 << 30

@dataclass(frozen=True)
class CapturedBackup:
    """A captured backup on local disk, with every fact its manifest will record."""

    backup_id: str
    kind: str
    object_path: str
    path: str
    bytes: int
    sha256: str
    uncompressed_bytes: int
    database: str
    server_version: str
    pg_dump_version: str
    started_at: str
    finished_at: str
    compression: dict[str, Any]
    parent_id: str | None = None
    base_full_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CapturedBackup:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def manifest(self, *, verified_method: str, extra_details: dict[str, Any] | None = None) -> BackupManifest:
        """The manifest committing this backup once its object was verified on the remote by ``verified_method``."""
        return BackupManifest(
            id=self.backup_id,
            kind=self.kind,
            database=self.database,
            started_at=parse_utc(self.started_at),
            finished_at=parse_utc(self.finished_at),
            server_version=self.server_version,
            pg_dump_version=self.pg_dump_version,
            artifact=StoredArtifact(path=self.object_path, bytes=self.bytes, sha256=self.sha256),
            uncompressed_bytes=self.uncompressed_bytes,
            compression=self.compression,
            tool_version=__version__,
            parent_id=self.parent_id,
            base_full_id=self.base_full_id,
            verified={"at": utc_iso(datetime.now(timezone.utc)), "method": verified_method},
            details={**self.details, **(extra_details or {})},
        )


class BackupCapture:
    """Captures full and incremental backups of one source into ``<local_dir>/<prefix>/<kind>/``."""

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
        self._dump: PgDump | None = None
        self._cancelled = False
        self._children: list[ChildProcess] = []
        # Connections reading tables side by side in the snapshot (the session's own included).
        self.readers = max(1, readers)
        self._reader_conns: list = []

    def terminate(self) -> None:
        self._cancelled = True
        if self._dump is not None:
            self._dump.terminate()
        for child in self._children:
            child.terminate()
        self._cancel_readers()

    def _cancel_readers(self) -> None:
        for conn in list(self._reader_conns):
            try:
                conn.cancel()
            except psycopg2.Error:
                pass  # already gone

    # -- full ----------------------------------------------------------------------
    def _new_id(self, kind: str) -> str:
        """A fresh id for a backup starting now; never waits for the clock.

        ``new_backup_id`` makes ids unique (a random suffix); should it give one already
        used on this machine — ids that are only unique per second — the next second's
        is taken instead, so no local copy or row-key state is ever overwritten.
        """
        at = datetime.now(timezone.utc)
        while True:
            backup_id = new_backup_id(kind, at)
            if not (self.local_dir / self.layout.object_path(kind, backup_id)).exists() and not RowKeyState(self.state_root, backup_id).dir.exists():
                return backup_id
            at += timedelta(seconds=1)

    def full(self, *, promoted_because: str | None = None, session: SnapshotSession | None = None) -> CapturedBackup:
        own_session = session is None
        session = session or SnapshotSession(self.target, logger=self.log)
        try:
            backup_id = self._new_id("full")
            state = RowKeyState(self.state_root, backup_id)
            object_path = self.layout.object_path("full", backup_id)
            with session.cursor() as cur:
                check_large_objects_readable(cur, self.target.describe())
            out_path = self.local_dir / object_path
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgbackup-describe") as pool:
                # psycopg2 releases the GIL while the server works: the reads run beside pg_dump.
                describe = pool.submit(self._describe, session, state)
                self._dump = PgDump(self.target, self.tools, self.compression, logger=self.log)
                try:
                    artifact = self._dump.run(out_path, snapshot=session.info.exported_id,
                                              on_first_output=lambda: self._check_storage_kept(session))
                    details = describe.result()
                    details["schema_sha256"] = self._schema_hash(session)
                except BaseException as failure:
                    try:
                        session.conn.cancel()  # stop the reads running beside the dump before the session closes
                    except psycopg2.Error:
                        pass  # the connection is already gone (the server restarted, say)
                    self._cancel_readers()
                    cause = describe.exception()  # waits for the reads to stop
                    shutil.rmtree(state.dir, ignore_errors=True)
                    out_path.unlink(missing_ok=True)
                    if cause is not None and cause is not failure and not isinstance(cause, psycopg2.extensions.QueryCanceledError):
                        # A failed read aborts the snapshot's transaction, and pg_dump then fails too: report the cause.
                        raise _for_operator(cause, state.dir) from failure
                    cleaned = _for_operator(failure, out_path)
                    if cleaned is failure:
                        raise
                    raise cleaned from None
        finally:
            if own_session:
                session.close()
        state.mark_complete()
        self._prune_state(keep={backup_id})
        if promoted_because:
            details["promoted_from_incremental"] = promoted_because
        return CapturedBackup(
            backup_id=backup_id, kind="full", object_path=object_path, path=artifact.path, bytes=artifact.bytes,
            sha256=artifact.sha256, uncompressed_bytes=artifact.uncompressed_bytes, database=self.target.dbname,
            server_version=self.server_version, pg_dump_version=self.tools.version, started_at=artifact.started_at,
            finished_at=artifact.finished_at, compression=self.compression.describe(), details=details,
        )

    def _describe(self, session: SnapshotSession, state: RowKeyState) -> dict[str, Any]:
        """Fingerprints, sequences, tables (and each table's row keys and hashes into ``state``), all in the session's snapshot.

        One pass per table: the sorted (key, row hash) lines go straight from COPY into
        the state file, and the fingerprint is summed from that file — the rows are
        rendered and hashed once, not once for the fingerprint and again for the keys.
        """
        clock = time.monotonic()
        with session.cursor() as cur:
            tables = list_tables(cur)
            sequences = read_sequences(cur)
            large_objects = large_objects_fingerprint(cur)
            # pg_table_size would lock every table to the end of the snapshot's transaction; the
            # catalog's page counts (as of the last VACUUM or ANALYZE) order the reads as well, lock-free.
            cur.execute("SELECT c.oid::bigint, c.relpages::bigint + coalesce(t.relpages, 0) FROM pg_catalog.pg_class c"
                        " LEFT JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid WHERE c.oid = ANY(%s)",
                        ([table.oid for table in tables],))
            pages = dict(cur.fetchall())
            sizes = {table.qualified: pages.get(table.oid, 0) for table in tables}
        fingerprints = self._each_table(session, sorted(tables, key=lambda t: -sizes[t.qualified]),
                                        lambda cur, table: self._read_table(cur, table, state))
        self.log.info("Read fingerprints and row keys of %s tables in %.1fs on %s connections",
                      len(tables), time.monotonic() - clock, min(self.readers, max(1, len(tables))))
        return _snapshot_details(session, tables, {t.qualified: fingerprints[t.qualified] for t in tables}, sequences, large_objects)

    def _read_table(self, cur, table: TableInfo, state: RowKeyState) -> dict:
        with reading_table(cur, table):
            if not table.key_columns:
                return relation_fingerprint(cur, table).to_dict()
            return state.write_table(cur, table)

    def _each_table(self, session: SnapshotSession, tables: list[TableInfo], work) -> dict[str, Any]:
        """``{table: work(cursor, table)}``, spread over up to ``readers`` connections that share the session's snapshot.

        Biggest tables first, so the longest read starts at once.  The first error stops
        the other connections' queries and is raised.
        """
        extra = []
        try:
            for _ in range(min(self.readers, len(tables)) - 1):
                extra.append(session.attach())
            self._reader_conns[:] = [session.conn, *extra]
            results = spread_over_connections(self._reader_conns[:], tables, work, before_each=self._check_cancelled,
                                              on_error=self._cancel_readers)
        finally:
            self._reader_conns[:] = []
            for conn in extra:
                conn.close()
        return {table.qualified: result for table, result in results.items()}

    def _schema_hash(self, session: SnapshotSession) -> str:
        """sha256 of ``pg_dump --schema-only`` of the snapshot, without the per-run ``\\restrict`` token lines."""
        argv = [self.tools.pg_dump, "--schema-only", "--no-password", f"--snapshot={session.info.exported_id}"]
        digest = hashlib.sha256()
        with self.target.libpq_env() as env:
            child = ChildProcess(argv, env=env, log=self.log)
            self._children.append(child)
            with child:
                for line in child.stdout:
                    if not line.startswith((b"\\restrict", b"\\unrestrict")):
                        digest.update(line)
                code = child.wait()
            self._children.remove(child)
        if code != 0:
            raise DumpError(f"pg_dump --schema-only of {self.target.describe()} failed: {pg_dump_failure(child.stderr_tail)}")
        return digest.hexdigest()

    def _check_storage_kept(self, session: SnapshotSession) -> None:
        """Raise :class:`TableRewritten` if a relation was truncated or rewritten between the snapshot and pg_dump's locks.

        Runs while pg_dump holds its lock on every table (it has begun writing): the
        capture's reads let go of their locks one table at a time, so they no longer
        keep such a rewrite waiting until pg_dump has locked the table itself.
        """
        conn = session.attach("pgbackup capture storage check")
        try:
            rewritten = storage_rewritten(conn)
        finally:
            conn.close()
        if rewritten:
            raise TableRewritten(f"table {rewritten} was truncated or rewritten after the backup's snapshot was taken; "
                                 "nothing was kept, and the next try takes a new snapshot")

    def _check_cancelled(self) -> None:
        if self._cancelled:
            raise DumpError("capture cancelled")

    def _prune_state(self, keep: set[str], newest: int = 3) -> None:
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

    # -- incremental -------------------------------------------------------------------
    def incremental(self, parent: BackupManifest | None) -> CapturedBackup:
        """An incremental on top of ``parent`` (the newest backup), or a full backup when one is needed."""
        if parent is None:
            self.log.warning("No full backup marker found: taking a full backup first")
            return self.full(promoted_because="no full backup exists yet")
        session = SnapshotSession(self.target, logger=self.log)
        try:
            parent_state = RowKeyState(self.state_root, parent.id)
            with session.cursor() as cur:
                here = _observe(cur)
            reason = self._promotion_reason(session, parent, parent_state, here)
            if reason:
                self.log.warning("Taking a full backup instead of an incremental: %s", reason)
                return self.full(promoted_because=reason, session=session)
            try:
                return self._incremental(session, parent, parent_state, here)
            except (StateMismatch, StateOrderError) as exc:
                # Nothing was kept of the incremental; the snapshot is intact (these are checks, not SQL errors).
                reason = f"the row-key state of parent {parent.id} does not add up with the source: {exc}"
                self.log.warning("Taking a full backup instead of an incremental: %s", reason)
                return self.full(promoted_because=reason, session=session)
        finally:
            session.close()

    def _promotion_reason(self, session: SnapshotSession, parent: BackupManifest, parent_state: RowKeyState,
                          here: _Observed) -> str | None:
        snap = parent.details.get("snapshot")
        if not snap or "fingerprints" not in parent.details or "schema_sha256" not in parent.details:
            return f"parent {parent.id} records no snapshot state (made by an older version?)"
        reason = older_parent_reason(parent)
        if reason:
            return reason
        if parent.database != self.target.dbname:
            return f"parent {parent.id} is a backup of database {parent.database!r}, not {self.target.dbname!r}"
        parent_source = SourceIdentity.from_dict(parent.details["source"])
        if not parent_source.same_database(session.source):
            return f"the source is {session.source.describe()}, the parent's was {parent_source.describe()}"
        reason = continuity_reason(snap, session.info)
        if reason:
            return reason
        if parent.details.get("settings") != session.settings:
            return f"the rendering settings differ from parent {parent.id}'s, so its fingerprints do not compare"
        if not parent_state.exists():
            return f"the row-key state of parent {parent.id} is not on this machine ({parent_state.dir})"
        if damage := parent_state.damage():
            return f"the row-key state of parent {parent.id} {damage}"
        if not parent_state.current_format():
            return f"the row-key state of parent {parent.id} is of an older format (keys without row hashes)"
        missing = [t for t, info in parent.details.get("tables", {}).items()
                   if info.get("kind", "r") == "r" and info.get("key_columns") and not parent_state.has_table(t)]
        if missing:
            return f"the row-key state of parent {parent.id} lacks {missing[0]}"
        reason = identity_reason(parent.details.get("tables", {}), here.tables)
        if reason:
            return reason
        schema = self._schema_hash(session)
        if schema != parent.details["schema_sha256"]:
            return "the schema changed since the parent (tables, columns, indexes or other definitions)"
        return content_outside_tables_reason(parent.details, here)

    def _incremental(self, session: SnapshotSession, parent: BackupManifest, parent_state: RowKeyState, here: _Observed) -> CapturedBackup:
        backup_id = self._new_id("incremental")
        started = datetime.now(timezone.utc)
        object_path = self.layout.object_path("incremental", backup_id)
        out_path = self.local_dir / object_path
        out_path.parent.mkdir(parents=True, exist_ok=True)
        partial = out_path.with_name(out_path.name + ".partial")
        state = RowKeyState(self.state_root, backup_id)
        parent_snapshot = parent.details["snapshot"]
        parent_fingerprints = parent.details["fingerprints"]
        changed_rows = self._changed_rows_condition(session.info.xmax, parent_snapshot["xmin"])
        clock = time.monotonic()
        captured: dict[str, Any] = {}
        raw_counter = _CountingWriter()
        try:
            with open(partial, "xb") as raw_out:
                sink = HashingWriter(raw_out)
                with self.compression.compressor().stream_writer(sink, closefd=False) as zwriter:
                    counted = _Tee(zwriter, raw_counter)
                    delta = DeltaWriter(counted)
                    fingerprints = dict(here.matview_fingerprints)  # proved equal to the parent's: nothing to carry
                    with session.cursor() as cur, scratch_dir(self.local_dir, "merge") as tmp:
                        tables = here.tables
                        sequences = read_sequences(cur)
                        for table in tables:
                            self._check_cancelled()
                            if table.is_matview:
                                captured[table.qualified] = {"mode": "unchanged"}
                                continue
                            captured[table.qualified], fingerprints[table.qualified] = self._capture_table(
                                cur, delta, table, parent_state, state, changed_rows, parent_fingerprints.get(table.qualified), Path(tmp),
                            )
                    delta.close()
                    details = _snapshot_details(session, tables, {t.qualified: fingerprints[t.qualified] for t in tables},
                                                sequences, here.large_objects)
                raw_out.flush()
                os.fsync(raw_out.fileno())
            os.replace(partial, out_path)
        except BaseException as failure:
            partial.unlink(missing_ok=True)
            shutil.rmtree(state.dir, ignore_errors=True)
            cleaned = _for_operator(failure, partial)
            if cleaned is failure:
                raise
            raise cleaned from None
        state.mark_complete()
        self._prune_state(keep={parent.id, backup_id})
        changed = {t: c for t, c in captured.items() if c["mode"] != "unchanged"}
        self.log.info(
            "Incremental %s: %s of %s tables changed, %s bytes of changes, %s bytes stored, %.1fs",
            backup_id, len(changed), len(captured), raw_counter.bytes, sink.bytes, time.monotonic() - clock,
        )
        for table, info in changed.items():
            self.log.info("  %-32s %s%s", table, info, f" row-key state: {state.work[table]}" if table in state.work else "")
        # _promotion_reason proved the schema equal to the parent's.
        details.update(captured=captured, schema_sha256=parent.details["schema_sha256"], row_state=state.work)
        return CapturedBackup(
            backup_id=backup_id, kind="incremental", object_path=object_path, path=str(out_path), bytes=sink.bytes,
            sha256=sink.sha256, uncompressed_bytes=raw_counter.bytes, database=self.target.dbname,
            server_version=self.server_version, pg_dump_version=self.tools.version, started_at=started.isoformat(),
            finished_at=datetime.now(timezone.utc).isoformat(),
            compression={**self.compression.describe(), "format": "pgbackup-delta-1"},
            parent_id=parent.id, base_full_id=parent.base_full_id or parent.id, details=details,
        )

    @staticmethod
    def _changed_rows_condition(xmax: int, parent_xmin: int) -> sql.Composable:
        """Rows whose (epoch-extended) xmin is at or after ``parent_xmin``.

        ``xmin`` is a 32-bit transaction id; it is extended to 64 bits with the
        epoch of the current snapshot's ``xmax``.  Ids below 3 are special (frozen,
        bootstrap) and always old.  Every row version created by a transaction
        not yet committed at the parent snapshot has an id >= that snapshot's xmin.
        """
        base = (xmax // XID_WRAP) * XID_WRAP
        return sql.SQL(
            "t.xmin::text::bigint >= 3 AND ({base} + t.xmin::text::bigint"
            " - CASE WHEN {base} + t.xmin::text::bigint >= {xmax} THEN {wrap} ELSE 0 END) >= {parent_xmin}"
        ).format(base=sql.Literal(base), xmax=sql.Literal(xmax), wrap=sql.Literal(XID_WRAP), parent_xmin=sql.Literal(parent_xmin))

    def _capture_table(self, cur, delta: DeltaWriter, table: TableInfo, parent_state: RowKeyState, state: RowKeyState,
                       changed_rows: sql.Composable, parent_fingerprint: dict | None, tmp: Path) -> tuple[dict[str, Any], dict]:
        """Write the table's sections and its new state; return what was captured and the table's fingerprint.

        The work follows the change, not the table: the changed rows are read, the
        parent's state is merged with them, and the current keys are read only when
        the row counts prove some parent rows are gone.
        """
        if parent_fingerprint is None:
            raise StateMismatch(f"parent has no fingerprint of {table.qualified} though the schema is unchanged")
        with reading_table(cur, table):
            return self._capture_held_table(cur, delta, table, parent_state, state, changed_rows, parent_fingerprint, tmp)

    def _capture_held_table(self, cur, delta: DeltaWriter, table: TableInfo, parent_state: RowKeyState, state: RowKeyState,
                            changed_rows: sql.Composable, parent_fingerprint: dict, tmp: Path) -> tuple[dict[str, Any], dict]:
        header = {"table": table.qualified, "schema": table.schema, "name": table.name,
                  "columns": list(table.columns), "key_columns": list(table.key_columns)}
        if not table.key_columns:
            return self._capture_keyless(cur, delta, table, header, changed_rows, parent_fingerprint)
        with ExitStack() as stack:
            deletes = []

            def on_deleted(keys: list[bytes]) -> None:
                if not deletes:
                    deletes.append(stack.enter_context(delta.section({**header, "action": "delete"})))
                deletes[0].write(b"\n".join(keys) + b"\n")

            change = capture_change(cur, table, parent_state, state, changed_rows, parent_fingerprint, tmp, on_deleted)
        if change.unchanged:
            return {"mode": "unchanged"}, parent_fingerprint
        query = sql.SQL("COPY (SELECT {} FROM ONLY {} AS t WHERE {}) TO STDOUT").format(table.column_list("t"), table.ident, changed_rows)
        with delta.section({**header, "action": "upsert"}) as out:
            cur.copy_expert(query.as_string(cur), out)
            upserted = cur.rowcount
        if upserted != change.changed:
            raise StateMismatch(f"{table.qualified}: {upserted} changed rows copied, {change.changed} hashed, in one snapshot")
        return {"mode": "rows", "upserted": upserted, "deleted": change.deleted}, change.fingerprint

    @staticmethod
    def _capture_keyless(cur, delta: DeltaWriter, table: TableInfo, header: dict, changed_rows: sql.Composable,
                         parent_fingerprint: dict) -> tuple[dict[str, Any], dict]:
        """A table without a primary key: unchanged when no row changed and none went missing, else stored whole.

        Rows not changed since the parent were all in the parent; with as many rows as
        the parent and none changed, the table holds exactly the parent's rows.
        """
        cur.execute(sql.SQL("SELECT count(*), count(*) FILTER (WHERE {}) FROM ONLY {} AS t").format(changed_rows, table.ident))
        rows, changed = cur.fetchone()
        if not changed and rows == parent_fingerprint["rows"]:
            return {"mode": "unchanged"}, parent_fingerprint
        fingerprint = table_fingerprint(cur, table.schema, table.name).to_dict()
        with delta.section({**header, "action": "replace"}) as out:
            cur.copy_expert(sql.SQL("COPY (SELECT {} FROM ONLY {} AS t) TO STDOUT").format(table.column_list("t"), table.ident).as_string(cur), out)
        return {"mode": "whole table", "reason": "no primary key", "rows": fingerprint["rows"], "bytes": out.bytes}, fingerprint


class LargeObjectsUnreadable(DumpError):
    """The backup role may not read some large objects: pg_dump would fail after a long time; fail before it starts."""


# Large objects the current role may not read, as PostgreSQL 15 decides it (pg_largeobject_aclmask):
# superusers and lo_compat_privileges read all, owners (and roles inheriting from them) theirs, else a SELECT grant.
LARGE_OBJECTS_UNREADABLE_SQL = """
SELECT count(*), min(m.oid::bigint) FROM pg_catalog.pg_largeobject_metadata m
WHERE pg_catalog.current_setting('is_superuser') <> 'on' AND pg_catalog.current_setting('lo_compat_privileges') <> 'on'
  AND NOT pg_catalog.pg_has_role(m.lomowner, 'USAGE')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.aclexplode(m.lomacl) a
                  WHERE a.privilege_type = 'SELECT' AND (a.grantee = 0 OR pg_catalog.pg_has_role(a.grantee, 'USAGE')))
"""


def check_large_objects_readable(cur, source: str) -> None:
    """Raise :class:`LargeObjectsUnreadable` unless the role can read every large object and their pages (for the fingerprint).

    ``pg_read_all_data`` covers tables, not large objects (PostgreSQL 15): such a role
    dumps a database with large objects only once it may read them.
    """
    cur.execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata)")
    if not cur.fetchone()[0]:
        return
    cur.execute(LARGE_OBJECTS_UNREADABLE_SQL)
    unreadable, example = cur.fetchone()
    cur.execute("SELECT pg_catalog.has_table_privilege('pg_catalog.pg_largeobject', 'SELECT'), current_user")
    pages_readable, role = cur.fetchone()
    if unreadable:
        raise LargeObjectsUnreadable(
            f"role {role} cannot read {unreadable} large object(s) of {source} (e.g. {example}), so pg_dump would fail; nothing was "
            f"captured: make the backup role a superuser, or the owner of the large objects, or GRANT SELECT ON LARGE OBJECT <oid> "
            f"TO {role} for each, or set lo_compat_privileges = on"
        )
    if not pages_readable:
        raise LargeObjectsUnreadable(
            f"role {role} cannot read pg_catalog.pg_largeobject of {source}, which the large objects' fingerprint reads; nothing was "
            f"captured: GRANT pg_read_all_data TO {role} (or SELECT on pg_catalog.pg_largeobject)"
        )


@dataclass(frozen=True)
class _Observed:
    """What an incremental reads of its snapshot before it decides: relations, materialized views' and large objects' fingerprints."""

    tables: list[TableInfo]
    matview_fingerprints: dict[str, dict]
    large_objects: dict | None


def _observe(cur) -> _Observed:
    tables = list_tables(cur)
    matviews = {}
    for table in tables:
        if table.is_matview:
            with reading_table(cur, table):
                matviews[table.qualified] = relation_fingerprint(cur, table).to_dict()
    return _Observed(tables, matviews, large_objects_fingerprint(cur))


def _snapshot_details(session: SnapshotSession, tables: list[TableInfo], fingerprints: dict, sequences: dict,
                      large_objects: dict | None) -> dict[str, Any]:
    """The manifest details every backup records of its snapshot (CONTRACT: format version 2)."""
    details = {
        "snapshot": session.info.to_dict(),
        "source": session.source.to_dict(),
        "settings": dict(session.settings),
        "fingerprints": fingerprints,
        "sequences": sequences,
        "tables": {t.qualified: t.identity() for t in tables},
    }
    if large_objects:
        details["large_objects"] = large_objects
    return details


def older_parent_reason(parent: BackupManifest) -> str | None:
    """A parent written before relations were known by OID and sources by identity cannot carry an incremental."""
    tables = parent.details.get("tables") or {}
    old_format = getattr(parent, "format_version", 2) < 2
    if old_format or "source" not in parent.details or any("oid" not in info for info in tables.values()):
        return (f"parent {parent.id} was made by an older version of pgbackup (it records no source identity or "
                "relation OIDs); a full backup records them")
    return None


def parse_lsn(text: str) -> int:
    """``"0/1D748F0"`` as a number, so WAL positions compare."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def continuity_reason(parent_snapshot: dict, here) -> str | None:
    """Why the source's history since the parent's snapshot may not be one line of transactions, or None.

    Rows count as changed by their xmin, which only works if every transaction since
    the parent is later in one history.  A failover, a point-in-time recovery or a
    restore from a file copy breaks that: the timeline changes, or the WAL position
    goes back, and transaction ids are reused — rows written then can carry ids
    below the parent's snapshot and would be missed.
    """
    if parent_snapshot.get("system_identifier") and here.system_identifier and parent_snapshot["system_identifier"] != here.system_identifier:
        return "the source is a different PostgreSQL cluster than the parent's"
    if parent_snapshot.get("timeline") is not None:
        if here.timeline is None:
            return "the source's timeline cannot be read now, so its history since the parent cannot be proved continuous"
        if here.timeline != parent_snapshot["timeline"]:
            return (f"the source is on timeline {here.timeline}, the parent's snapshot was on {parent_snapshot['timeline']}: "
                    "it was promoted, failed over or recovered to a point in time since")
    if parent_snapshot.get("wal_lsn"):
        if not here.wal_lsn:
            return "the source's WAL position cannot be read now, so its history since the parent cannot be proved continuous"
        if parse_lsn(here.wal_lsn) < parse_lsn(parent_snapshot["wal_lsn"]):
            return (f"the source's WAL position {here.wal_lsn} is behind the parent's {parent_snapshot['wal_lsn']}: "
                    "it was restored from a copy or recovered to an earlier point")
    if here.xmax < parent_snapshot["xmax"]:
        return "transaction ids went backwards since the parent: the source was replaced or restored"
    if here.xmax - parent_snapshot["xmin"] > MAX_XID_DISTANCE:
        return f"over {MAX_XID_DISTANCE} transactions since the parent"
    return None


def identity_reason(parent_tables: dict[str, dict], tables: list[TableInfo]) -> str | None:
    """A relation under a key the parent knew, but not the same relation (by OID): its row-key state is another table's."""
    for table in tables:
        seen = parent_tables.get(table.qualified)
        if seen is not None and (seen["oid"] != table.oid or seen.get("kind", "r") != table.kind):
            return (f"{table.qualified} is not the relation the parent saw (oid {seen['oid']} then, {table.oid} now): "
                    "it was renamed, swapped with another or dropped and re-created")
    return None


def content_outside_tables_reason(parent_details: dict, here: _Observed) -> str | None:
    """Materialized views and large objects are not carried by incrementals: any change to them takes a full."""
    parent_tables = parent_details.get("tables") or {}
    parent_fingerprints = parent_details.get("fingerprints") or {}
    for table in here.tables:
        if not table.is_matview:
            continue
        if parent_tables.get(table.qualified, {}).get("relfilenode") != table.relfilenode:
            return f"materialized view {table.qualified} was refreshed since the parent (incrementals carry table rows only)"
        if parent_fingerprints.get(table.qualified) != here.matview_fingerprints[table.qualified]:
            return f"materialized view {table.qualified} changed since the parent (REFRESH ... CONCURRENTLY; incrementals carry table rows only)"
    if parent_details.get("large_objects") != here.large_objects:
        return "the large objects changed since the parent (incrementals carry table rows only)"
    return None


def _for_operator(exc: BaseException, where: Path) -> BaseException:
    """ENOSPC and a lost database connection as the operator should read them; any other error unchanged."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return DumpError(f"local disk full while writing {where}; the partial files were removed and older backups left as they were")
    if isinstance(exc, psycopg2.Error):
        first = (str(exc).strip().splitlines() or ["connection lost"])[0]
        hint = getattr(getattr(exc, "diag", None), "message_hint", None)
        # PostgreSQL's hint says what to change (e.g. "You might need to increase max_locks_per_transaction.").
        hint = f" (HINT: {hint.strip()})" if hint and hint.strip() not in first else ""
        return DumpError(f"the backup's database session failed: {first}{hint}; nothing was kept")
    return exc


class _CountingWriter:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)


class _Tee:
    """Write to the compressor while counting the uncompressed bytes."""

    def __init__(self, out, counter: _CountingWriter) -> None:
        self.out, self.counter = out, counter

    def write(self, data: bytes) -> int:
        self.counter.write(data)
        return self.out.write(data)
