"""Capture a backup — full or incremental — from one snapshot of the source database.

A **full** backup is ``pg_dump`` of the exported snapshot.  While it runs, the same
snapshot is read for what the next incremental needs: per-table fingerprints,
sequence values, a hash of the schema, and the sorted primary keys of every
table (the *row-key state*, kept locally under ``<local dir>/state``).

An **incremental** backup stores, per table, only what changed since its parent:
- rows whose ``xmin`` is at or after the parent snapshot's ``xmin`` (inserted or
  updated since; a few older ones may be re-sent, which is harmless), as upserts;
- keys present in the parent's row-key state and gone now, as deletes;
- for a table without a primary key, the whole table when its fingerprint changed.

It promotes itself to a full backup — and says why in the log and the manifest —
when there is no parent, the schema changed, the parent's row-key state is not on
this machine, or the source is not the same cluster.  Never a silently wrong restore.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import zstandard
from child_process import ChildProcess
from psycopg2 import sql

from pgbackup import __version__
from pgbackup.compression import CHUNK, Compression, HashingWriter
from pgbackup.delta import DeltaWriter
from pgbackup.dump import DumpError, PgDump
from pgbackup.fingerprint import read_sequences, table_fingerprint
from pgbackup.layout import BackupLayout, new_backup_id
from pgbackup.manifest import BackupManifest, StoredArtifact, parse_utc, utc_iso
from pgbackup.postgres import PgTarget, PgTools
from pgbackup.snapshot import SnapshotSession
from pgbackup.tables import TableInfo, list_tables

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


class RowKeyState:
    """Sorted primary keys of every table at one backup, one zstd file per table, on local disk."""

    def __init__(self, root: Path, backup_id: str) -> None:
        self.dir = Path(root) / backup_id

    def exists(self) -> bool:
        return (self.dir / "COMPLETE").is_file()

    def path(self, table: str) -> Path:
        return self.dir / f"{table}.keys.zst"

    def write_keys(self, session: SnapshotSession, table: TableInfo) -> Path:
        """Stream the table's key texts, sorted bytewise (``COLLATE "C"`` = Python's str order), into its file."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(table.qualified)
        query = sql.SQL('SELECT k FROM (SELECT {} AS k FROM {} AS t) AS keys ORDER BY k COLLATE "C"').format(table.key_text(), table.ident)
        with session.cursor(name=f"keys_{abs(hash(table.qualified))}") as cur, open(path, "wb") as raw:
            cur.itersize = 50_000
            cur.execute(query)
            with zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False) as out:
                for (key,) in cur:
                    out.write(json.dumps(key).encode() + b"\n")
        return path

    def keys(self, table: str):
        """The table's keys in sorted order.  A missing file is an error, never "no keys": that would hide deletes."""
        path = self.path(table)
        with open(path, "rb") as raw:
            reader = zstandard.ZstdDecompressor().stream_reader(raw)
            buffered = _lines(reader)
            for line in buffered:
                yield json.loads(line)

    def mark_complete(self) -> None:
        (self.dir / "COMPLETE").write_text(datetime.now(timezone.utc).isoformat())


def _lines(reader):
    pending = b""
    for chunk in iter(lambda: reader.read(CHUNK), b""):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


def deleted_keys(parent_keys, current_keys):
    """Keys in ``parent_keys`` but not in ``current_keys``; both sorted, streamed in one pass."""
    current = iter(current_keys)
    head = next(current, None)
    for key in parent_keys:
        while head is not None and head < key:
            head = next(current, None)
        if head != key:
            yield key


def copy_escape(text: str) -> str:
    """A value in COPY text format."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


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

    def terminate(self) -> None:
        self._cancelled = True
        if self._dump is not None:
            self._dump.terminate()
        for child in self._children:
            child.terminate()

    # -- full ----------------------------------------------------------------------
    def _new_id(self, kind: str, after: str | None) -> str:
        """A fresh id, later than ``after`` (the parent): ids have one-second resolution."""
        while True:
            backup_id = new_backup_id(kind, datetime.now(timezone.utc))
            stamp = backup_id.split("-")[0]
            if (after is None or stamp > after.split("-")[0]) and not (self.local_dir / self.layout.object_path(kind, backup_id)).exists():
                return backup_id
            time.sleep(0.2)

    def full(self, *, promoted_because: str | None = None, session: SnapshotSession | None = None, after: str | None = None) -> CapturedBackup:
        own_session = session is None
        session = session or SnapshotSession(self.target, logger=self.log)
        try:
            backup_id = self._new_id("full", after)
            state = RowKeyState(self.state_root, backup_id)
            object_path = self.layout.object_path("full", backup_id)
            describe = _Background(lambda: self._describe(session, state))
            self._dump = PgDump(self.target, self.tools, self.compression, logger=self.log)
            out_path = self.local_dir / object_path
            try:
                artifact = self._dump.run(out_path, snapshot=session.info.exported_id)
                details = describe.result()
                details["schema_sha256"] = self._schema_hash(session)
            except BaseException as failure:
                try:
                    session.conn.cancel()  # stop the reads running beside the dump before the session closes
                except psycopg2.Error:
                    pass  # the connection is already gone (the server restarted, say)
                describe.wait_quietly()
                shutil.rmtree(state.dir, ignore_errors=True)
                out_path.unlink(missing_ok=True)
                cause = describe.error
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
        """Fingerprints, sequences, tables (and row keys into ``state``) read in the session's snapshot."""
        clock = time.monotonic()
        with session.cursor() as cur:
            tables = list_tables(cur)
            fingerprints = {}
            for table in tables:
                self._check_cancelled()
                fingerprints[table.qualified] = table_fingerprint(cur, table.schema, table.name).to_dict()
                if table.key_columns:
                    state.write_keys(session, table)
            sequences = read_sequences(cur)
        self.log.info("Read fingerprints and row keys of %s tables in %.1fs", len(tables), time.monotonic() - clock)
        return {
            "snapshot": session.info.to_dict(),
            "fingerprints": fingerprints,
            "sequences": sequences,
            "tables": {t.qualified: {"key_columns": list(t.key_columns)} for t in tables},
        }

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
            raise DumpError(f"pg_dump --schema-only of {self.target.describe()} failed: {child.stderr_tail.splitlines()[-1:]}")
        return digest.hexdigest()

    def _check_cancelled(self) -> None:
        if self._cancelled:
            raise DumpError("capture cancelled")

    def _prune_state(self, keep: set[str], newest: int = 3) -> None:
        """Drop old row-key states: an incremental's parent is always one of the newest backups.

        The newest few are kept, not just ``keep``, because a capture that is not yet
        committed (or never will be) must not take its parent's state from a concurrent
        or later incremental.
        """
        if not self.state_root.is_dir():
            return
        states = sorted((e for e in self.state_root.iterdir() if e.is_dir()), key=lambda e: e.name.split("-")[0])
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
            reason = self._promotion_reason(session, parent, parent_state)
            if reason:
                self.log.warning("Taking a full backup instead of an incremental: %s", reason)
                return self.full(promoted_because=reason, session=session, after=parent.id)
            return self._incremental(session, parent, parent_state)
        finally:
            session.close()

    def _promotion_reason(self, session: SnapshotSession, parent: BackupManifest, parent_state: RowKeyState) -> str | None:
        snap = parent.details.get("snapshot")
        if not snap or "fingerprints" not in parent.details or "schema_sha256" not in parent.details:
            return f"parent {parent.id} records no snapshot state (made by an older version?)"
        if parent.database != self.target.dbname:
            return f"parent {parent.id} is a backup of database {parent.database!r}, not {self.target.dbname!r}"
        here = session.info
        if snap.get("system_identifier") and here.system_identifier and snap["system_identifier"] != here.system_identifier:
            return "the source is a different PostgreSQL cluster than the parent's"
        if here.xmax < snap["xmax"]:
            return "transaction ids went backwards since the parent: the source was replaced or restored"
        if here.xmax - snap["xmin"] > MAX_XID_DISTANCE:
            return f"over {MAX_XID_DISTANCE} transactions since the parent"
        if not parent_state.exists():
            return f"the row-key state of parent {parent.id} is not on this machine ({parent_state.dir})"
        missing = [t for t, info in parent.details.get("tables", {}).items() if info.get("key_columns") and not parent_state.path(t).is_file()]
        if missing:
            return f"the row-key state of parent {parent.id} lacks {missing[0]}"
        schema = self._schema_hash(session)
        if schema != parent.details["schema_sha256"]:
            return "the schema changed since the parent (tables, columns, indexes or other definitions)"
        return None

    def _incremental(self, session: SnapshotSession, parent: BackupManifest, parent_state: RowKeyState) -> CapturedBackup:
        backup_id = self._new_id("incremental", parent.id)
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
                    details = self._describe(session, state)
                    with session.cursor() as cur:
                        for table in list_tables(cur):
                            self._check_cancelled()
                            captured[table.qualified] = self._capture_table(
                                cur, delta, table, parent_state, state, changed_rows,
                                details["fingerprints"][table.qualified], parent_fingerprints.get(table.qualified),
                            )
                    delta.close()
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
            self.log.info("  %-32s %s", table, info)
        # _promotion_reason proved the schema equal to the parent's.
        details.update(captured=captured, schema_sha256=parent.details["schema_sha256"])
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
                       changed_rows: sql.Composable, fingerprint: dict, parent_fingerprint: dict | None) -> dict[str, Any]:
        header = {"table": table.qualified, "schema": table.schema, "name": table.name,
                  "columns": list(table.columns), "key_columns": list(table.key_columns)}
        if not table.key_columns:
            if fingerprint == parent_fingerprint:
                return {"mode": "unchanged"}
            with delta.section({**header, "action": "replace"}) as out:
                cur.copy_expert(sql.SQL("COPY (SELECT {} FROM {} AS t) TO STDOUT").format(table.column_list("t"), table.ident).as_string(cur), out)
            return {"mode": "whole table", "reason": "no primary key", "rows": fingerprint["rows"], "bytes": out.bytes}
        deleted = 0
        gone = deleted_keys(parent_state.keys(table.qualified), state.keys(table.qualified))
        first = next(gone, None)
        if first is not None:
            with delta.section({**header, "action": "delete"}) as out:
                for key in (first, *gone):
                    out.write((copy_escape(key) + "\n").encode())
                    deleted += 1
        query = sql.SQL("COPY (SELECT {} FROM {} AS t WHERE {}) TO STDOUT").format(table.column_list("t"), table.ident, changed_rows)
        with delta.section({**header, "action": "upsert"}) as out:
            cur.copy_expert(query.as_string(cur), out)
            upserted = cur.rowcount
        if not deleted and not upserted:
            return {"mode": "unchanged"}
        return {"mode": "rows", "upserted": upserted, "deleted": deleted}


def _for_operator(exc: BaseException, where: Path) -> BaseException:
    """ENOSPC and a lost database connection as the operator should read them; any other error unchanged."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return DumpError(f"local disk full while writing {where}; the partial files were removed and older backups left as they were")
    if isinstance(exc, psycopg2.Error):
        first = (str(exc).strip().splitlines() or ["connection lost"])[0]
        return DumpError(f"the backup's database session failed: {first}; nothing was kept")
    return exc


class _Background:
    """Run one function in a thread (psycopg2 releases the GIL while the server works) and get its result."""

    def __init__(self, fn) -> None:
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn) -> None:
        try:
            self._result = fn()
        except BaseException as exc:  # re-raised in result()
            self._error = exc

    def wait_quietly(self) -> None:
        self._thread.join()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


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
