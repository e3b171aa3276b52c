"""One consistent view of the source database for everything a backup reads.

A backup opens a ``REPEATABLE READ READ ONLY`` transaction, exports its snapshot
(``pg_export_snapshot()``) and hands it to ``pg_dump --snapshot``; the
fingerprints, row keys and changed rows it reads itself come from the same
transaction, so writes running during the backup never give a mixed state.

Before the snapshot is taken the session holds a PostgreSQL advisory lock
shared by full and incremental backups of the same database: two captures
never overlap, whichever scheduler, worker or machine started them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from pgbackup.model.identity import SourceIdentity
from pgbackup.postgres.fingerprint import pin_output_settings
from pgbackup.postgres.sources import read_source_identity
from pgbackup.postgres.target import PgTarget

log = logging.getLogger(__name__)
# "pgbackup" as a 64-bit advisory lock key, shared by every capture of a database.
CAPTURE_LOCK_KEY = 0x7067_6261_636B_7570 - (1 << 63)


class TableRewritten(RuntimeError):
    """A table was truncated or rewritten after the snapshot: the snapshot would read it empty.  Retrying takes a new one."""


class TableDefinitionChanged(TableRewritten):
    """A table's columns or primary key changed after the snapshot: its rows would be read against the wrong definition."""


def hold_table_as_snapshot_sees_it(cur, table) -> None:
    """Take the lock a read takes (held to the end of the transaction), then prove no rewrite or
    definition change came between snapshot and lock.

    ``TRUNCATE`` and table-rewriting ``ALTER TABLE`` are not MVCC-safe: committed
    after the snapshot but before a table is first read, the snapshot sees the
    table's new, empty storage — a silently wrong backup whose restore check would
    pass.  Both give the table a new ``relfilenode``: the snapshot's ``pg_class``
    row still names the old one, ``pg_relation_filenode()`` (the catalog as it is
    now, read after the lock) the new one.  Once locked, no rewrite can follow
    while the lock is held (to the end of the read: :func:`reading_table`).  Locking each table only when it is read, rather than
    all before the snapshot, keeps a lock held elsewhere from stalling the whole
    capture where a task timeout cannot interrupt it.  (VACUUM FULL and CLUSTER
    also change the relfilenode; they are MVCC-safe, and only cost a retry.)

    A definition change that does not rewrite (``ADD COLUMN``, ``DROP COLUMN``, a
    new primary key) is just as wrong: the snapshot's ``pg_attribute`` lists the
    old columns while the rows are stored for the new ones.  The relation's
    columns as they are now come from the relcache (the result description of
    ``SELECT * ... LIMIT 0``, which also takes the lock of a read), the primary
    key's columns as they are now from ``pg_get_indexdef`` (the syscache); both
    must equal what the snapshot's catalog says.  A materialized view cannot be
    ``LOCK``ed; the ``SELECT`` takes its lock (one never populated cannot be
    read at all, and only its relfilenode is compared).
    """
    if table.kind != "m":
        cur.execute(sql.SQL("LOCK TABLE ONLY {} IN ACCESS SHARE MODE").format(table.ident))
    current_columns = None
    if table.populated:
        cur.execute(sql.SQL("SELECT * FROM ONLY {} LIMIT 0").format(table.ident))
        current_columns = [(column.name, column.type_code) for column in cur.description or ()]
    cur.execute("SELECT c.relfilenode, pg_catalog.pg_relation_filenode(c.oid) FROM pg_catalog.pg_class c WHERE c.oid = %s",
                (table.oid,))
    seen, current = cur.fetchone()
    if seen != current:
        raise TableRewritten(
            f"table {table.qualified} was truncated or rewritten after the backup's snapshot was taken; "
            "nothing was kept, and the next try takes a new snapshot"
        )
    seen_columns = [(name, int(type_oid)) for name, _generated, type_oid in (d.rsplit(":", 2) for d in table.definition)]
    current_key = _current_key_columns(cur, table)
    if (current_columns is not None and current_columns != seen_columns) or current_key != list(table.key_columns):
        raise TableDefinitionChanged(
            f"table {table.qualified} changed its definition (columns or primary key) after the backup's snapshot was taken; "
            "nothing was kept, and the next try takes a new snapshot"
        )


@contextmanager
def reading_table(cur, table) -> Iterator[None]:
    """Hold the table as the snapshot sees it (:func:`hold_table_as_snapshot_sees_it`) while the block runs, then let go.

    A lock taken in a transaction is held to its end — unless taken after a savepoint
    that is then rolled back to.  The read runs inside one, so a capture holds at most
    one table lock per connection, not one per table: beside pg_dump's own lock on every
    table, a capture of thousands of tables stays within the lock table that pg_dump
    alone needs (``max_locks_per_transaction``).  Once its rows are read, a table may
    change: what was read is the snapshot's.  (pg_dump's reads are covered by its own
    locks and :func:`storage_rewritten`.)
    """
    cur.execute("SAVEPOINT pgbackup_read")
    hold_table_as_snapshot_sees_it(cur, table)
    yield
    cur.execute("ROLLBACK TO SAVEPOINT pgbackup_read")  # releases the table's lock; nothing was written
    cur.execute("RELEASE SAVEPOINT pgbackup_read")


# Relations whose storage now is not the one the snapshot's catalog names (or that are gone).
STORAGE_REWRITTEN_SQL = """
SELECT c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp%' AND c.relfilenode IS DISTINCT FROM pg_catalog.pg_relation_filenode(c.oid)
ORDER BY 1 LIMIT 1
"""


def storage_rewritten(conn) -> str | None:
    """The first relation truncated or rewritten since the snapshot of ``conn`` (a fresh connection that imported it), or None.

    pg_dump locks every table before it writes its first byte and holds the locks
    until it exits; asked while it runs, this proves no TRUNCATE or rewrite came
    between the snapshot and pg_dump's locks — the window the capture's own locks,
    released after each read, no longer cover.  A fresh connection has no cached
    catalog, so ``pg_relation_filenode`` reads the catalog as it is now.
    """
    with conn.cursor() as cur:
        cur.execute(STORAGE_REWRITTEN_SQL)
        row = cur.fetchone()
    return row[0] if row else None


def _current_key_columns(cur, table) -> list[str]:
    """The snapshot's primary key index's key columns in the catalog as it is now (``pg_get_indexdef`` reads the syscache)."""
    if table.key_index is None:
        return []
    cur.execute(
        "SELECT pg_catalog.pg_get_indexdef(%s, k, false) FROM pg_catalog.generate_series(1, %s) AS k ORDER BY k",
        (table.key_index, len(table.key_columns)),
    )
    return [_unquoted(column) for (column,) in cur.fetchall()]


def _unquoted(identifier: str | None) -> str | None:
    """``pg_get_indexdef`` quotes a column name as ``quote_ident`` does; undo it to compare with ``attname``."""
    if identifier and identifier.startswith('"') and identifier.endswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier


def _probe(cur, query: str, otherwise: tuple) -> tuple:
    """One row of ``query``, or ``otherwise`` when the role may not run it (rolled back to a savepoint: the snapshot stays)."""
    cur.execute("SAVEPOINT pgbackup_probe")
    try:
        cur.execute(query)
        row = cur.fetchone()
        cur.execute("RELEASE SAVEPOINT pgbackup_probe")
        return row
    except psycopg2.Error:
        cur.execute("ROLLBACK TO SAVEPOINT pgbackup_probe")
        return otherwise


class CaptureBusy(RuntimeError):
    """Another backup of this database is capturing and did not finish in time."""


@dataclass(frozen=True)
class SnapshotInfo:
    exported_id: str  # for pg_dump --snapshot
    pg_snapshot: str  # pg_current_snapshot() as text, "xmin:xmax:xip,..."
    xmin: int  # 64-bit (epoch-extended) oldest transaction still running at the snapshot
    xmax: int
    taken_at: str  # the server's clock, ISO 8601
    system_identifier: str | None  # the cluster's identity, when the role may read it
    timeline: int | None = None  # pg_control_checkpoint().timeline_id, when the role may read it
    wal_lsn: str | None = None  # where the WAL was (written on a primary, replayed on a standby), e.g. "0/1D748F0"

    def to_dict(self) -> dict:
        return {
            "pg_snapshot": self.pg_snapshot, "xmin": self.xmin, "xmax": self.xmax,
            "taken_at": self.taken_at, "system_identifier": self.system_identifier,
            "timeline": self.timeline, "wal_lsn": self.wal_lsn,
        }


class SnapshotSession:
    """Holds the capture lock and the exported snapshot until ``close()``."""

    source: SourceIdentity  # the database, read in the snapshot
    settings: dict[str, str]  # the rendering settings pinned in the snapshot's transaction

    def __init__(self, target: PgTarget, *, logger: logging.Logger | None = None, lock_wait_seconds: float = 3600) -> None:
        self.target = target
        self.log = logger or log
        self.conn = target.connect(application_name="pgbackup capture")
        self.conn.autocommit = True
        try:
            self._lock(lock_wait_seconds)
            self.conn.autocommit = False
            self.conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
            self.info = self._take_snapshot()
        except BaseException:
            self.conn.close()
            raise

    def _lock(self, wait_seconds: float) -> None:
        deadline = time.monotonic() + wait_seconds
        announced = False
        with self.conn.cursor() as cur:
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (CAPTURE_LOCK_KEY,))
                if cur.fetchone()[0]:
                    return
                if not announced:
                    self.log.info("Another backup of %s is capturing; waiting for it to finish", self.target.describe())
                    announced = True
                if time.monotonic() >= deadline:
                    raise CaptureBusy(f"another backup of {self.target.describe()} held the capture lock for over {wait_seconds:.0f}s")
                time.sleep(2)

    def _take_snapshot(self) -> SnapshotInfo:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT pg_export_snapshot(), pg_current_snapshot()::text,"
                " pg_snapshot_xmin(pg_current_snapshot())::text::bigint, pg_snapshot_xmax(pg_current_snapshot())::text::bigint,"
                " to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
            )
            exported, snapshot, xmin, xmax, taken_at = cur.fetchone()
            self.settings = pin_output_settings(cur)
            self.source = read_source_identity(cur)
            timeline, wal_lsn = _probe(cur, (
                "SELECT (pg_catalog.pg_control_checkpoint()).timeline_id, CASE WHEN pg_catalog.pg_is_in_recovery()"
                " THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_lsn() END::text"
            ), (None, None))
        self.log.info("Snapshot %s taken at %s (exported as %s)", snapshot, taken_at, exported)
        return SnapshotInfo(exported, snapshot, xmin, xmax, taken_at, self.source.system_identifier, timeline, wal_lsn)

    def attach(self, application_name: str = "pgbackup capture reader"):
        """Another connection that sees exactly this session's snapshot (``SET TRANSACTION SNAPSHOT``).

        Reads spread over such connections run side by side and still give one
        consistent state.  It needs no capture lock: this session holds it, and
        the exported snapshot stays importable only while this session's
        transaction is open.
        """
        conn = self.target.connect(application_name=application_name)
        try:
            conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (self.info.exported_id,))
                pin_output_settings(cur)
        except BaseException:
            conn.close()
            raise
        return conn

    def cursor(self, name: str | None = None):
        return self.conn.cursor(name=name) if name else self.conn.cursor()

    def close(self) -> None:
        if not self.conn.closed:
            try:
                self.conn.rollback()
            finally:
                self.conn.close()  # ends the session, releasing the advisory lock

    def __enter__(self) -> SnapshotSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
