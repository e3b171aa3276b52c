"""The incremental backup: per table only what changed since its parent, as one delta object (``delta.py``).

- rows whose ``xmin`` is at or after the parent snapshot's ``xmin`` (inserted or
  updated since; a few older ones may be re-sent, which is harmless), as upserts;
- keys present in the parent's row-key state and gone now, as deletes.  The current
  keys are read only when the row counts prove some parent rows are gone;
- for a table without a primary key, the whole table when a row changed or went missing.

Its row-key state and fingerprints are the parent's, adjusted by the changed and
deleted rows.  Before anything is captured, what the source says now is read in
the incremental's snapshot and :func:`pgbackup.capture.promotion.promotion_reason`
decides whether the incremental can be proved right; when not — or when the
parent's state does not add up with its manifest or the source while it is merged
— the capture becomes a full in the same snapshot, saying why in the log and the
manifest (``details["promoted_from_incremental"]``).
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from psycopg2 import sql

from pgbackup.capture.captured import CapturedBackup, snapshot_details
from pgbackup.capture.compression import CHUNK, HashingWriter
from pgbackup.capture.context import CaptureContext
from pgbackup.capture.delta import DeltaWriter
from pgbackup.capture.errors import translate_capture_error
from pgbackup.capture.full import capture_promoted_full
from pgbackup.capture.promotion import SourceNow, promotion_reason
from pgbackup.capture.rowstate import (
    HASH_HEX,
    RowKeyState,
    StateMismatch,
    StateOrderError,
    StateOutgrown,
    TableFingerprintSums,
    capture_change,
)
from pgbackup.model.manifest import BackupManifest
from pgbackup.postgres.fingerprint import large_objects_fingerprint, read_sequences, relation_fingerprint
from pgbackup.postgres.snapshot import SnapshotSession, reading_table
from pgbackup.postgres.tables import TableInfo, list_tables
from pgbackup.storage.scratch import scratch_dir

XID_WRAP = 1 << 32


def capture_incremental(ctx: CaptureContext, parent: BackupManifest | None) -> CapturedBackup:
    """An incremental on top of ``parent`` (the newest backup), or a full backup when one is needed."""
    if parent is None:
        ctx.log.warning("No full backup marker found: taking a full backup first")
        session = ctx.open_snapshot()
        try:
            return capture_promoted_full(ctx, session, "no full backup exists yet")
        finally:
            session.close()
    session = ctx.open_snapshot()
    try:
        parent_state = ctx.state(parent.id)
        now = read_source_now(ctx, session)
        reason = promotion_reason(parent, parent_state, now)
        if reason:
            ctx.log.warning("Taking a full backup instead of an incremental: %s", reason)
            return capture_promoted_full(ctx, session, reason)
        try:
            return _incremental_in(ctx, session, parent, parent_state, now)
        except (StateMismatch, StateOrderError) as exc:
            # Nothing was kept of the incremental; the snapshot is intact (these are checks, not SQL errors).
            reason = (f"the row-key state of parent {parent.id} is outgrown: {exc}" if isinstance(exc, StateOutgrown)
                      else f"the row-key state of parent {parent.id} does not add up with the source: {exc}")
            ctx.log.warning("Taking a full backup instead of an incremental: %s", reason)
            return capture_promoted_full(ctx, session, reason)
    finally:
        session.close()


def read_source_now(ctx: CaptureContext, session: SnapshotSession) -> SourceNow:
    """What the promotion decision compares with the parent, read in ``session``'s snapshot."""
    with session.cursor() as cur:
        tables = list_tables(cur)
        matviews = {}
        for table in tables:
            if table.is_matview:
                with reading_table(cur, table):
                    matviews[table.qualified] = relation_fingerprint(cur, table).to_dict()
        large_objects = large_objects_fingerprint(cur)
    return SourceNow(
        database=ctx.target.dbname, identity=session.source, snapshot=session.info, settings=dict(session.settings),
        tables=tuple(tables), schema_sha256=ctx.schema_sha256(session), matview_fingerprints=matviews,
        large_objects=large_objects,
    )


def changed_rows_condition(parent_xmin: int) -> sql.Composable:
    """Rows whose ``xmin`` is at or after ``parent_xmin``: ``age(t.xmin) <= age(<parent_xmin>)``.

    ``age(xid)`` is how far back ``xid`` lies from a transaction counter value fixed for the
    whole reading transaction (at its first call), as a signed 32-bit difference: comparing
    two ages taken in one transaction is comparing the ids modulo 2^32, epoch and wraparound
    included, with no text cast per row (half the filter's cost of ``xmin::text::bigint``).
    Both ages are in the condition, so it means the same on any connection.  It holds while
    the parent is fewer than 2^31 transactions back; ``promotion_reason`` promotes at
    ``MAX_XID_DISTANCE`` (2^30).  Special ids (bootstrap, frozen) are of age ``INT_MAX``:
    never changed — and a parent xmin that is one makes every row changed, which re-sends and
    never misses.  ``age(xid)`` is parallel restricted: no worker evaluates it against a
    counter of its own.  Every row version created by a transaction not yet committed at the
    parent snapshot has an id at or after that snapshot's xmin (a few older ones may be
    re-sent, which is harmless).
    """
    return sql.SQL("pg_catalog.age(t.xmin) <= pg_catalog.age({}::xid)").format(sql.Literal(str(parent_xmin % XID_WRAP)))


def _incremental_in(ctx: CaptureContext, session: SnapshotSession, parent: BackupManifest, parent_state: RowKeyState,
                    now: SourceNow) -> CapturedBackup:
    backup_id = ctx.new_id("incremental")
    started = datetime.now(timezone.utc)
    object_path = ctx.layout.object_path("incremental", backup_id)
    out_path = ctx.local_dir / object_path
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    state = ctx.state(backup_id)
    parent_fingerprints = parent.details["fingerprints"]
    changed_rows = changed_rows_condition(parent.details["snapshot"]["xmin"])
    clock = time.monotonic()
    captured: dict[str, Any] = {}
    raw_counter = _CountingWriter()
    tables = list(now.tables)
    try:
        with open(partial, "xb") as raw_out:
            sink = HashingWriter(raw_out)
            with ctx.compression.compressor().stream_writer(sink, closefd=False) as zwriter:
                delta = DeltaWriter(_Tee(zwriter, raw_counter))
                fingerprints = dict(now.matview_fingerprints)  # proved equal to the parent's: nothing to carry
                with session.cursor() as cur, scratch_dir(ctx.local_dir, "merge") as tmp:
                    sequences = read_sequences(cur)
                    tables_pass = _TableChanges(cur, delta, parent_state, state, changed_rows, Path(tmp))
                    for table in tables:
                        ctx.check_cancelled()
                        if table.is_matview:
                            captured[table.qualified] = {"mode": "unchanged"}
                            continue
                        captured[table.qualified], fingerprints[table.qualified] = tables_pass.capture(
                            table, parent_fingerprints.get(table.qualified))
                delta.close()
                details = snapshot_details(session, tables, {t.qualified: fingerprints[t.qualified] for t in tables},
                                           sequences, now.large_objects)
            raw_out.flush()
            os.fsync(raw_out.fileno())
        os.replace(partial, out_path)
    except BaseException as failure:
        partial.unlink(missing_ok=True)
        shutil.rmtree(state.dir, ignore_errors=True)
        cleaned = translate_capture_error(failure, partial)
        if cleaned is failure:
            raise
        raise cleaned from None
    state.mark_complete()
    ctx.prune_state(keep={parent.id, backup_id})
    changed = {t: c for t, c in captured.items() if c["mode"] != "unchanged"}
    ctx.log.info(
        "Incremental %s: %s of %s tables changed, %s bytes of changes, %s bytes stored, %.1fs",
        backup_id, len(changed), len(captured), raw_counter.bytes, sink.bytes, time.monotonic() - clock,
    )
    for table, info in changed.items():
        ctx.log.info("  %-32s %s%s", table, info, f" row-key state: {state.work[table]}" if table in state.work else "")
    # promotion_reason proved the schema equal to the parent's.
    details.update(captured=captured, schema_sha256=parent.details["schema_sha256"], row_state=state.work)
    return CapturedBackup(
        backup_id=backup_id, kind="incremental", object_path=object_path, path=str(out_path), bytes=sink.bytes,
        sha256=sink.sha256, uncompressed_bytes=raw_counter.bytes, database=ctx.target.dbname,
        server_version=ctx.server_version, pg_dump_version=ctx.tools.version, started_at=started.isoformat(),
        finished_at=datetime.now(timezone.utc).isoformat(),
        compression={**ctx.compression.describe(), "format": "pgbackup-delta-1"},
        parent_id=parent.id, base_full_id=parent.base_full_id or parent.id, details=details,
    )


@dataclass
class _TableChanges:
    """One incremental's pass over its tables: each table's delta sections into ``delta``, its new state into ``state``."""

    cur: Any
    delta: DeltaWriter
    parent_state: RowKeyState
    state: RowKeyState
    changed_rows: sql.Composable
    tmp: Path

    def capture(self, table: TableInfo, parent_fingerprint: dict | None) -> tuple[dict[str, Any], dict]:
        """Write the table's sections and its new state; return what was captured and the table's fingerprint.

        The work follows the change, not the table: the changed rows are read, the
        parent's state is merged with them, and the current keys are read only when
        the row counts prove some parent rows are gone.
        """
        if parent_fingerprint is None:
            raise StateMismatch(f"parent has no fingerprint of {table.qualified} though the schema is unchanged")
        with reading_table(self.cur, table):
            header = {"table": table.qualified, "schema": table.schema, "name": table.name,
                      "columns": list(table.columns), "key_columns": list(table.key_columns)}
            if not table.key_columns:
                return self._keyless(table, header, parent_fingerprint)
            return self._keyed(table, header, parent_fingerprint)

    def _keyed(self, table: TableInfo, header: dict, parent_fingerprint: dict) -> tuple[dict[str, Any], dict]:
        """The bucketed merge (``rowstate.capture_change``): deletes as they are found, then the changed rows as upserts.

        The upserts are the rows the merge read (one scan of the table for both), so
        their count is the merge's by construction; it is checked all the same.
        """
        delta = self.delta
        upserted = [0]
        with ExitStack() as stack:
            deletes = []

            def on_deleted(keys: list[bytes]) -> None:
                if not deletes:
                    deletes.append(stack.enter_context(delta.section({**header, "action": "delete"})))
                deletes[0].write(b"\n".join(keys) + b"\n")

            def on_changed(blocks) -> None:
                stack.close()  # the delete section ends before the upserts begin
                with delta.section({**header, "action": "upsert"}) as out:
                    for rows in blocks:
                        out.write(b"\n".join(rows) + b"\n")
                        upserted[0] += len(rows)

            change = capture_change(self.cur, table, self.parent_state, self.state, self.changed_rows, parent_fingerprint, self.tmp,
                                    on_deleted, on_changed)
        if change.unchanged:
            return {"mode": "unchanged"}, parent_fingerprint
        if upserted[0] != change.changed:
            raise StateMismatch(f"{table.qualified}: {upserted[0]} changed rows written as upserts, {change.changed} merged")
        return {"mode": "rows", "upserted": upserted[0], "deleted": change.deleted}, change.fingerprint

    def _keyless(self, table: TableInfo, header: dict, parent_fingerprint: dict) -> tuple[dict[str, Any], dict]:
        """A table without a primary key: unchanged when no row changed and none went missing, else stored whole.

        Rows not changed since the parent were all in the parent; with as many rows as
        the parent and none changed, the table holds exactly the parent's rows.
        """
        cur = self.cur
        cur.execute(sql.SQL("SELECT count(*), count(*) FILTER (WHERE {}) FROM ONLY {} AS t").format(self.changed_rows, table.ident))
        rows, changed = cur.fetchone()
        if not changed and rows == parent_fingerprint["rows"]:
            return {"mode": "unchanged"}, parent_fingerprint
        columns = sql.SQL("{}, ").format(table.column_list("t")) if table.columns else sql.SQL("")
        query = sql.SQL("COPY (SELECT {}md5(t::text) FROM ONLY {} AS t) TO STDOUT").format(columns, table.ident)
        with self.delta.section({**header, "action": "replace"}) as out:
            hashed = _HashedRows(out)
            cur.copy_expert(query.as_string(cur), hashed)
            hashed.close()
        fingerprint = hashed.sums.to_dict()
        return {"mode": "whole table", "reason": "no primary key", "rows": fingerprint["rows"], "bytes": out.bytes}, fingerprint


class _HashedRows:
    """COPY lines of a table's columns and then ``md5(t::text)``: the rows go on to ``out``, the hashes into its fingerprint.

    The table is read once, for its rows and its fingerprint alike (``table_fingerprint``
    sums the same md5 of the same row text): one pass less over a table without a key.
    COPY writes a row at a time; rows are gathered and handled about ``CHUNK`` bytes at once.
    """

    def __init__(self, out) -> None:
        self.out, self.sums = out, TableFingerprintSums()
        self._pending, self._chunks, self._size = b"", [], 0

    def write(self, data: bytes | str) -> int:
        if isinstance(data, str):
            data = data.encode()
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= CHUNK:
            self._flush()
        return len(data)

    def _flush(self) -> None:
        lines = (self._pending + b"".join(self._chunks)).split(b"\n")
        self._pending, self._chunks, self._size = lines.pop(), [], 0
        if lines:
            self.sums.add(lines)  # each line ends with its row's md5
            self.out.write(b"".join(line[: max(len(line) - HASH_HEX - 1, 0)] + b"\n" for line in lines))

    def close(self) -> None:
        self._flush()
        if self._pending:
            raise StateMismatch(f"COPY ended within a line: {self._pending[:80]!r}")


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
