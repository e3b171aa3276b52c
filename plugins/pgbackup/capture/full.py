"""The full backup: ``pg_dump`` of the exported snapshot, with the row-key pass beside it.

While pg_dump runs, the same snapshot is read — on a few connections that import
it, side by side — for what the next incremental needs: sequence values, a hash
of the schema, and per table the sorted primary keys with each row's hash (the
*row-key state*, ``rowstate.py``, kept locally under ``<local dir>/state``), from
which the table's fingerprint is summed.  Materialized views and large objects
are fingerprinted too; a role that may not read the large objects fails the
backup before ``pg_dump`` starts.

Two entry points: :func:`capture_full` (a full in a snapshot of its own) and
:func:`capture_promoted_full` (the full an incremental became, in the snapshot the
incremental already holds, recording why in ``details["promoted_from_incremental"]``).
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import psycopg2
import psycopg2.extensions

from pgbackup.capture.captured import CapturedBackup, snapshot_details
from pgbackup.capture.context import CaptureContext
from pgbackup.capture.errors import translate_capture_error
from pgbackup.capture.large_objects import check_large_objects_readable
from pgbackup.capture.rowstate import RowKeyState
from pgbackup.postgres.fingerprint import large_objects_fingerprint, read_sequences, relation_fingerprint
from pgbackup.postgres.parallel import spread_over_connections
from pgbackup.postgres.snapshot import SnapshotSession, TableRewritten, reading_table, storage_rewritten
from pgbackup.postgres.tables import TableInfo, list_tables


def capture_full(ctx: CaptureContext) -> CapturedBackup:
    """A full backup in a snapshot of its own (the capture lock is held until it is written)."""
    session = ctx.open_snapshot()
    try:
        return _full_in(ctx, session)
    finally:
        session.close()


def capture_promoted_full(ctx: CaptureContext, session: SnapshotSession, reason: str) -> CapturedBackup:
    """The full taken instead of an incremental, in ``session`` (the incremental's snapshot); ``reason`` says why."""
    captured = _full_in(ctx, session)
    return replace(captured, details={**captured.details, "promoted_from_incremental": reason})


def _full_in(ctx: CaptureContext, session: SnapshotSession) -> CapturedBackup:
    backup_id = ctx.new_id("full")
    state = ctx.state(backup_id)
    object_path = ctx.layout.object_path("full", backup_id)
    with session.cursor() as cur:
        check_large_objects_readable(cur, ctx.target.describe())
    out_path = ctx.local_dir / object_path
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgbackup-row-state") as pool:
        # psycopg2 releases the GIL while the server works: the reads run beside pg_dump.
        reading = pool.submit(read_row_state, ctx, session, state)
        try:
            artifact = ctx.pg_dump().run(out_path, snapshot=session.info.exported_id,
                                         on_first_output=lambda: _check_storage_kept(session))
            details = reading.result()
            details["schema_sha256"] = ctx.schema_sha256(session)
        except BaseException as failure:
            try:
                session.conn.cancel()  # stop the reads running beside the dump before the session closes
            except psycopg2.Error:
                pass  # the connection is already gone (the server restarted, say)
            ctx.cancel_readers()
            cause = reading.exception()  # waits for the reads to stop
            shutil.rmtree(state.dir, ignore_errors=True)
            out_path.unlink(missing_ok=True)
            if cause is not None and cause is not failure and not isinstance(cause, psycopg2.extensions.QueryCanceledError):
                # A failed read aborts the snapshot's transaction, and pg_dump then fails too: report the cause.
                raise translate_capture_error(cause, state.dir) from failure
            cleaned = translate_capture_error(failure, out_path)
            if cleaned is failure:
                raise
            raise cleaned from None
    state.mark_complete()
    ctx.prune_state(keep={backup_id})
    return CapturedBackup(
        backup_id=backup_id, kind="full", object_path=object_path, path=artifact.path, bytes=artifact.bytes,
        sha256=artifact.sha256, uncompressed_bytes=artifact.uncompressed_bytes, database=ctx.target.dbname,
        server_version=ctx.server_version, pg_dump_version=ctx.tools.version, started_at=artifact.started_at,
        finished_at=artifact.finished_at, compression=ctx.compression.describe(), details=details,
    )


def read_row_state(ctx: CaptureContext, session: SnapshotSession, state: RowKeyState) -> dict[str, Any]:
    """Read every row of every table in the session's snapshot: write each table's row-key state file into ``state``
    and return the manifest details (fingerprints, sequences, tables, large objects).

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
    fingerprints = _each_table(ctx, session, sorted(tables, key=lambda t: -sizes[t.qualified]),
                               lambda cur, table: _read_table(cur, table, state))
    ctx.log.info("Read fingerprints and row keys of %s tables in %.1fs on %s connections",
                 len(tables), time.monotonic() - clock, min(ctx.readers, max(1, len(tables))))
    return snapshot_details(session, tables, {t.qualified: fingerprints[t.qualified] for t in tables}, sequences, large_objects)


def _read_table(cur, table: TableInfo, state: RowKeyState) -> dict:
    with reading_table(cur, table):
        if not table.key_columns:
            return relation_fingerprint(cur, table).to_dict()
        return state.write_table(cur, table)


def _each_table(ctx: CaptureContext, session: SnapshotSession, tables: list[TableInfo], work) -> dict[str, Any]:
    """``{table: work(cursor, table)}``, spread over up to ``ctx.readers`` connections that share the session's snapshot.

    Biggest tables first, so the longest read starts at once.  The first error stops
    the other connections' queries and is raised.
    """
    extra = []
    try:
        for _ in range(min(ctx.readers, len(tables)) - 1):
            extra.append(session.attach())
        ctx.reader_conns[:] = [session.conn, *extra]
        results = spread_over_connections(ctx.reader_conns[:], tables, work, before_each=ctx.check_cancelled,
                                          on_error=ctx.cancel_readers)
    finally:
        ctx.reader_conns[:] = []
        for conn in extra:
            conn.close()
    return {table.qualified: result for table, result in results.items()}


def _check_storage_kept(session: SnapshotSession) -> None:
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
