"""After a restore: put the sequences back, then prove the target holds exactly the backed-up state — or refuse.

The target's tables, materialized views, large objects and sequences are read in
one snapshot and compared with what the backup point recorded.  Any difference
fails the restore with the relations that differ.

Materialized views are not copied: PostgreSQL restores one by running its query
(``REFRESH``) on the restored tables, so a source whose view was stale at the
backup restores with different contents.  That mismatch is named as such.

Manifests of format version 1 keyed relations and sequences by ``schema.name``
unquoted and stored sequences as ``[last_value, is_called]``; they are still
compared under those keys.  A version-1 sequence is found in the target by that
text, never by splitting it: a name that matches no sequence, or more than one,
is refused.

The restore of a full alone does not wait for pg_restore to finish: ``RestoreCheck``
fingerprints every table as soon as the data section is in, beside the post-data
section (indexes, constraints, triggers), and counts the transactions that wrote
each table's rows (their ``xmin``).  Once post-data is done it counts them again: a
row written since its table's fingerprint (by a post-data function with side
effects, or another client) has a transaction the first count did not see, and a
row deleted lowers a count — either way the table is refused as changed.  So the
overlapped check proves exactly what the check after the restore proves.
"""

from __future__ import annotations

import threading

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from pgbackup.model.manifest import BackupManifest
from pgbackup.postgres.fingerprint import (
    HASH_HALVES_SQL,
    TableFingerprint,
    large_objects_fingerprint,
    pin_output_settings,
    read_sequences,
    relation_fingerprint,
    snapshot_fingerprints,
)
from pgbackup.postgres.naming import Identifier
from pgbackup.postgres.parallel import spread_over_connections
from pgbackup.postgres.tables import TableInfo, list_tables
from pgbackup.postgres.target import PgTarget


def _error(message: str):
    from pgbackup.restore.chain import RestoreError  # restore imports this module

    return RestoreError(message)


def _is_v1(point: BackupManifest) -> bool:
    """Written before relations were keyed by quote_ident (format 1: no source identity recorded)."""
    return getattr(point, "format_version", 2) < 2 or "source" not in point.details


def restore_sequences(target: PgTarget, point: BackupManifest) -> None:
    sequences = point.details.get("sequences") or {}
    if not sequences:
        return
    conn = target.connect()
    try:
        with conn.cursor() as cur:
            for key, value in sequences.items():
                if isinstance(value, dict):
                    ident = Identifier(value["schema"], value["name"])
                    last_value, is_called = value["last_value"], value["is_called"]
                else:
                    ident = _v1_sequence(cur, key, point)
                    last_value, is_called = value
                cur.execute(sql.SQL("SELECT pg_catalog.setval({}::pg_catalog.regclass, %s, %s)").format(sql.Literal(ident.as_string(cur))),
                            (last_value, is_called))
        conn.commit()
    finally:
        conn.close()


def _v1_sequence(cur, key: str, point: BackupManifest) -> sql.Identifier:
    """The target's one sequence whose unquoted ``schema.name`` is ``key`` (a version-1 manifest's key)."""
    cur.execute(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'S' AND n.nspname || '.' || c.relname = %s",
        (key,),
    )
    found = cur.fetchall()
    if len(found) != 1:
        raise _error(f"backup {point.id} (an older manifest format) names sequence {key!r}, which matches {len(found)} sequences "
                     "of the target; it cannot be put back unambiguously")
    return Identifier(*found[0])


def _matview_keys(point: BackupManifest) -> set[str]:
    return {key for key, info in (point.details.get("tables") or {}).items() if info.get("kind") == "m"}


def check_restored(target: PgTarget, point: BackupManifest, *, jobs: int = 1) -> tuple[int, int]:
    """Compare the target with the fingerprints, large objects and sequences recorded at ``point``; raise on any difference.

    The check of a target nothing else writes to, in one snapshot (``ChainRestore`` uses ``RestoreCheck``).
    The tables are fingerprinted on up to ``jobs`` connections sharing one snapshot:
    the same check as in one transaction, in a fraction of the time.
    """
    expected = point.details.get("fingerprints")
    if expected is None:
        raise _error(f"backup {point.id} records no fingerprints; the restore cannot be checked")
    fingerprints, sequences = snapshot_fingerprints(target, jobs=max(1, jobs))
    return compare_with_backup(target, point, fingerprints, sequences)


def compare_with_backup(target: PgTarget, point: BackupManifest, fingerprints: dict[str, TableFingerprint],
                        sequences: dict[str, dict]) -> tuple[int, int]:
    """Raise on any difference between what was read from the target and what ``point`` recorded; ``(tables, rows)``."""
    expected = point.details.get("fingerprints")
    if expected is None:
        raise _error(f"backup {point.id} records no fingerprints; the restore cannot be checked")
    old = _is_v1(point)
    if old:
        # Version 1 knew tables only, keyed "schema.name".
        fingerprints = {f"{s['schema']}.{s['name']}": f for s, f in _with_names(target, fingerprints) if s["kind"] == "r"}
        sequences = {f"{v['schema']}.{v['name']}": [v["last_value"], v["is_called"]] for v in sequences.values()}
    actual = {t: f.to_dict() for t, f in fingerprints.items()}
    differing = sorted(t for t in set(expected) | set(actual) if expected.get(t) != actual.get(t))
    if differing:
        matviews = _matview_keys(point)
        stale = [t for t in differing if t in matviews]
        detail = "; ".join(f"{t}: expected {expected.get(t)}, found {actual.get(t)}" for t in differing[:5])
        message = f"restored data differs from backup {point.id} in {len(differing)} table(s): {detail}"
        if stale and len(stale) == len(differing):
            message = (f"restored materialized view(s) {', '.join(stale[:5])} differ from backup {point.id}: PostgreSQL restores a "
                       "materialized view by REFRESH from the restored tables, and the source's was stale (not refreshed since "
                       f"its tables changed); refresh it on the source and back up again ({detail})")
        raise _error(message)
    _check_large_objects(target, point)
    wanted = {k: (list(v) if old else dict(v)) for k, v in (point.details.get("sequences") or {}).items()}
    wrong = sorted(k for k in wanted if sequences.get(k) != wanted[k])
    if wrong:
        raise _error(f"sequences differ from backup {point.id}: " + ", ".join(f"{k} is {sequences.get(k)}, expected {wanted[k]}" for k in wrong))
    return len(actual), sum(f["rows"] for f in actual.values())


def _with_names(target: PgTarget, fingerprints: dict) -> list[tuple[dict, object]]:
    """Each fingerprint with its relation's schema, name and kind (for re-keying under a version-1 manifest's names)."""
    from pgbackup.postgres.tables import list_tables

    conn = target.connect()
    try:
        with conn.cursor() as cur:
            tables = {t.qualified: t for t in list_tables(cur)}
    finally:
        conn.close()
    return [({"schema": tables[k].schema, "name": tables[k].name, "kind": tables[k].kind}, f)
            for k, f in fingerprints.items() if k in tables]


def _check_large_objects(target: PgTarget, point: BackupManifest) -> None:
    conn = target.connect(application_name="pgbackup restore check")
    try:
        with conn.cursor() as cur:
            pin_output_settings(cur)
            actual = large_objects_fingerprint(cur)
    finally:
        conn.close()
    expected = point.details.get("large_objects")
    if _is_v1(point) and expected is None:
        return  # version 1 did not record large objects
    if actual != expected:
        raise _error(f"restored large objects differ from backup {point.id}: expected {expected or 'none'}, found {actual or 'none'}")


def _writers(cur, table: TableInfo) -> dict[str, int]:
    """``{xmin: rows}``: how many of the table's visible rows each transaction wrote (a scan without rendering a row)."""
    cur.execute(sql.SQL("SELECT t.xmin::text, count(*) FROM ONLY {} AS t GROUP BY t.xmin").format(Identifier(table.schema, table.name)))
    return dict(cur.fetchall())


# One scan gives a table's fingerprint (the sums of its rows' hash halves, as fingerprint.table_fingerprint) and its writers.
# md5 is called in FROM (a function scan: once a row) — as a subquery's column it would be pulled up into both
# halves and every row rendered and hashed twice.
_FINGERPRINT_BY_WRITER_SQL = (
    "SELECT t.xmin::text, count(*), " + ", ".join(f"coalesce(sum({half}), 0)" for half in HASH_HALVES_SQL)
    + " FROM ONLY {} AS t CROSS JOIN LATERAL pg_catalog.md5(t::text) AS h GROUP BY t.xmin"
)


def fingerprint_and_writers(cur, table: TableInfo) -> tuple[TableFingerprint, dict[str, int]]:
    """A table's fingerprint, the same as ``table_fingerprint``'s, and its ``{xmin: rows}``, in one read of its rows."""
    cur.execute(sql.SQL(_FINGERPRINT_BY_WRITER_SQL).format(Identifier(table.schema, table.name)))
    groups = cur.fetchall()
    high, low = sum(int(g[2]) for g in groups), sum(int(g[3]) for g in groups)
    return TableFingerprint(rows=sum(g[1] for g in groups), hash=f"{high}:{low}"), {g[0]: g[1] for g in groups}


class RestoreCheck:
    """The check of a restored full in two parts: the tables once the data section is in, the rest once pg_restore is done.

    ``check_tables()`` runs beside the post-data section, on up to ``jobs`` connections of
    its own; each table is read in a short transaction of its own, because one long
    transaction would hold every table's ACCESS SHARE lock until its end and stall
    post-data's ``ALTER TABLE ... ADD CONSTRAINT`` on them.  ``finish()`` runs after
    pg_restore: it refuses a table written since its fingerprint (see the module
    docstring), fingerprints the materialized views (post-data fills them) and any
    table not seen yet, then compares everything with ``point`` as ``check_restored`` does.
    ``cancel()`` (from another thread) stops the queries still running.
    """

    def __init__(self, target: PgTarget, point: BackupManifest, *, jobs: int = 1) -> None:
        self.target = target
        self.point = point
        self.jobs = max(1, jobs)
        self.early: dict[int, tuple[TableFingerprint, dict[str, int]]] = {}  # by oid: post-data adds keys, not tables
        self._lock = threading.Lock()
        self._open: list = []
        self._cancelled = False

    def _connect(self):
        with self._lock:
            if self._cancelled:
                raise _error(f"the check of the restore of {self.point.id} was cancelled")
            conn = self.target.connect(application_name="pgbackup restore check")
            self._open.append(conn)
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        return conn

    def _close_all(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            conn.close()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            for conn in self._open:
                conn.cancel()

    def _raise_if_cancelled(self) -> None:
        if self._cancelled:
            raise _error(f"the check of the restore of {self.point.id} was cancelled")

    def _read_table(self, cur, table: TableInfo) -> tuple[TableFingerprint, dict[str, int]]:
        pin_output_settings(cur)
        found = fingerprint_and_writers(cur, table)
        cur.connection.commit()  # one table, one transaction: its lock is released at once
        return found

    def _tables_by_size(self, cur, kinds: tuple[str, ...]) -> list[TableInfo]:
        tables = list_tables(cur, kinds=kinds)
        sizes = {}
        for table in tables:
            cur.execute("SELECT pg_catalog.pg_table_size(%s)", (table.oid,))
            sizes[table.oid] = cur.fetchone()[0]
        return sorted(tables, key=lambda t: -sizes[t.oid])  # the longest read starts first

    def check_tables(self) -> None:
        """Fingerprint every table (not the materialized views) and count its rows' writers."""
        try:
            main = self._connect()
            with main.cursor() as cur:
                tables = self._tables_by_size(cur, ("r",))
            main.commit()
            conns = [main, *(self._connect() for _ in range(min(self.jobs, len(tables)) - 1))]
            found = spread_over_connections(conns, tables, self._read_table, before_each=self._raise_if_cancelled,
                                            on_error=self.cancel)
            self.early = {table.oid: read for table, read in found.items()}
        except psycopg2.Error as exc:
            raise _error(f"checking the restore of {self.point.id}: {str(exc).strip().splitlines()[0]}") from None
        finally:
            self._close_all()

    def finish(self) -> tuple[int, int]:
        """After pg_restore and ``restore_sequences``: refuse a table changed since its fingerprint, then compare all."""
        try:
            conn = self._connect()
            try:
                with conn.cursor() as cur:
                    pin_output_settings(cur)
                    fingerprints: dict[str, TableFingerprint] = {}
                    changed = []
                    for table in list_tables(cur):
                        if table.oid in self.early:
                            fingerprint, writers = self.early[table.oid]
                            if _writers(cur, table) != writers:
                                changed.append(table.qualified)
                        else:
                            fingerprint = relation_fingerprint(cur, table)
                        fingerprints[table.qualified] = fingerprint
                    sequences = read_sequences(cur)
            finally:
                conn.rollback()
                self._close_all()
        except psycopg2.Error as exc:
            raise _error(f"checking the restore of {self.point.id}: {str(exc).strip().splitlines()[0]}") from None
        if changed:
            raise _error(f"restored table(s) {', '.join(changed[:5])} were written after their fingerprint was checked (by a "
                         f"function with side effects that pg_restore's post-data section ran, or by another client connected "
                         f"to the target); the target does not hold backup {self.point.id} exactly")
        return compare_with_backup(self.target, self.point, fingerprints, sequences)
