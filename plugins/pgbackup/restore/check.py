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
"""

from __future__ import annotations

from psycopg2 import sql

from pgbackup.model.manifest import BackupManifest
from pgbackup.postgres.fingerprint import (
    large_objects_fingerprint,
    pin_output_settings,
    snapshot_fingerprints,
)
from pgbackup.postgres.naming import Identifier
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

    The tables are fingerprinted on up to ``jobs`` connections sharing one snapshot:
    the same check as in one transaction, in a fraction of the time.
    """
    expected = point.details.get("fingerprints")
    if expected is None:
        raise _error(f"backup {point.id} records no fingerprints; the restore cannot be checked")
    fingerprints, sequences = snapshot_fingerprints(target, jobs=max(1, jobs))
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
