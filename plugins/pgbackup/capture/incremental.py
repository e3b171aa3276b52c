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
from pgbackup.capture.compression import HashingWriter
from pgbackup.capture.context import CaptureContext
from pgbackup.capture.delta import DeltaWriter
from pgbackup.capture.errors import translate_capture_error
from pgbackup.capture.full import capture_promoted_full
from pgbackup.capture.promotion import SourceNow, promotion_reason
from pgbackup.capture.rowstate import RowKeyState, StateMismatch, StateOrderError, capture_change
from pgbackup.model.manifest import BackupManifest
from pgbackup.postgres.fingerprint import large_objects_fingerprint, read_sequences, relation_fingerprint, table_fingerprint
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
            reason = f"the row-key state of parent {parent.id} does not add up with the source: {exc}"
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


def changed_rows_condition(xmax: int, parent_xmin: int) -> sql.Composable:
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
    changed_rows = changed_rows_condition(session.info.xmax, parent.details["snapshot"]["xmin"])
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
        """The bucketed merge (``rowstate.capture_change``): deletes as they are found, then the changed rows as upserts."""
        cur, delta = self.cur, self.delta
        with ExitStack() as stack:
            deletes = []

            def on_deleted(keys: list[bytes]) -> None:
                if not deletes:
                    deletes.append(stack.enter_context(delta.section({**header, "action": "delete"})))
                deletes[0].write(b"\n".join(keys) + b"\n")

            change = capture_change(cur, table, self.parent_state, self.state, self.changed_rows, parent_fingerprint, self.tmp, on_deleted)
        if change.unchanged:
            return {"mode": "unchanged"}, parent_fingerprint
        query = sql.SQL("COPY (SELECT {} FROM ONLY {} AS t WHERE {}) TO STDOUT").format(table.column_list("t"), table.ident, self.changed_rows)
        with delta.section({**header, "action": "upsert"}) as out:
            cur.copy_expert(query.as_string(cur), out)
            upserted = cur.rowcount
        if upserted != change.changed:
            raise StateMismatch(f"{table.qualified}: {upserted} changed rows copied, {change.changed} hashed, in one snapshot")
        return {"mode": "rows", "upserted": upserted, "deleted": change.deleted}, change.fingerprint

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
        fingerprint = table_fingerprint(cur, table.schema, table.name).to_dict()
        with self.delta.section({**header, "action": "replace"}) as out:
            cur.copy_expert(sql.SQL("COPY (SELECT {} FROM ONLY {} AS t) TO STDOUT").format(table.column_list("t"), table.ident).as_string(cur), out)
        return {"mode": "whole table", "reason": "no primary key", "rows": fingerprint["rows"], "bytes": out.bytes}, fingerprint


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
