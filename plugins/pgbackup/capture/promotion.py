"""When an incremental must become a full: a pure decision over the parent, its row-key state and the source now.

An incremental stores what changed since its parent; it is right only if the
parent's state plus the changed rows *is* the source now.  :func:`promotion_reason`
gives the first reason that cannot be proved — or None, and the incremental is taken:

- a parent made by an older version (no snapshot state, no source identity, no
  relation OIDs), of another database or cluster (``pgbackup.model.identity``);
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
- the rendering settings differ from the parent's (its fingerprints would not compare);
- the parent's row-key state is not on this machine, is damaged, of an older
  format, or lacks a table;
- a relation under a name the parent knew is not the same relation (OIDs differ:
  renamed, swapped, dropped and re-created) — names alone would apply one table's
  row-key state to another;
- the schema changed;
- a materialized view was refreshed or changed, or the large objects changed:
  incrementals carry table rows only.

The function reads nothing from the database: what the source says now arrives
as a :class:`SourceNow`, read in the incremental's snapshot (``incremental.py``).
The parent's row-key state is asked only about its files on this machine.
Never a silently wrong restore.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pgbackup.capture.rowstate import RowKeyState
from pgbackup.model.identity import SourceIdentity
from pgbackup.model.manifest import BackupManifest
from pgbackup.postgres.snapshot import SnapshotInfo
from pgbackup.postgres.tables import TableInfo

# Past this many transactions since the parent, 32-bit xmin values become ambiguous: take a full.
MAX_XID_DISTANCE = 1 << 30


@dataclass(frozen=True)
class SourceNow:
    """What the source says in the incremental's snapshot, before anything is captured."""

    database: str  # the database name the capture connects to
    identity: SourceIdentity
    snapshot: SnapshotInfo  # timeline, WAL position, xmin/xmax
    settings: Mapping[str, str]  # the rendering settings pinned in the snapshot
    tables: tuple[TableInfo, ...]  # every relation, with its OID and relfilenode
    schema_sha256: str
    matview_fingerprints: Mapping[str, dict]
    large_objects: dict | None


def promotion_reason(parent: BackupManifest, parent_state: RowKeyState, now: SourceNow) -> str | None:
    """Why an incremental on ``parent`` cannot be proved right and a full must be taken instead, or None."""
    snap = parent.details.get("snapshot")
    if not snap or "fingerprints" not in parent.details or "schema_sha256" not in parent.details:
        return f"parent {parent.id} records no snapshot state (made by an older version?)"
    reason = older_parent_reason(parent)
    if reason:
        return reason
    if parent.database != now.database:
        return f"parent {parent.id} is a backup of database {parent.database!r}, not {now.database!r}"
    parent_source = SourceIdentity.from_dict(parent.details["source"])
    if not parent_source.same_database(now.identity):
        return f"the source is {now.identity.describe()}, the parent's was {parent_source.describe()}"
    reason = continuity_reason(snap, now.snapshot)
    if reason:
        return reason
    if parent.details.get("settings") != dict(now.settings):
        return f"the rendering settings differ from parent {parent.id}'s, so its fingerprints do not compare"
    reason = parent_state_reason(parent, parent_state)
    if reason:
        return reason
    reason = identity_reason(parent.details.get("tables", {}), now.tables)
    if reason:
        return reason
    if now.schema_sha256 != parent.details["schema_sha256"]:
        return "the schema changed since the parent (tables, columns, indexes or other definitions)"
    return content_outside_tables_reason(parent.details, now)


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


def continuity_reason(parent_snapshot: dict, here: SnapshotInfo) -> str | None:
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


def parent_state_reason(parent: BackupManifest, parent_state: RowKeyState) -> str | None:
    """Why the parent's row-key state on this machine cannot be merged with the changes: missing, damaged, old, or short of a table."""
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
    return None


def identity_reason(parent_tables: dict[str, dict], tables) -> str | None:
    """A relation under a key the parent knew, but not the same relation (by OID): its row-key state is another table's."""
    for table in tables:
        seen = parent_tables.get(table.qualified)
        if seen is not None and (seen["oid"] != table.oid or seen.get("kind", "r") != table.kind):
            return (f"{table.qualified} is not the relation the parent saw (oid {seen['oid']} then, {table.oid} now): "
                    "it was renamed, swapped with another or dropped and re-created")
    return None


def content_outside_tables_reason(parent_details: dict, now: SourceNow) -> str | None:
    """Materialized views and large objects are not carried by incrementals: any change to them takes a full."""
    parent_tables = parent_details.get("tables") or {}
    parent_fingerprints = parent_details.get("fingerprints") or {}
    for table in now.tables:
        if not table.is_matview:
            continue
        if parent_tables.get(table.qualified, {}).get("relfilenode") != table.relfilenode:
            return f"materialized view {table.qualified} was refreshed since the parent (incrementals carry table rows only)"
        if parent_fingerprints.get(table.qualified) != now.matview_fingerprints[table.qualified]:
            return f"materialized view {table.qualified} changed since the parent (REFRESH ... CONCURRENTLY; incrementals carry table rows only)"
    if parent_details.get("large_objects") != now.large_objects:
        return "the large objects changed since the parent (incrementals carry table rows only)"
    return None
