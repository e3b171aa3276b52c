"""Retention as a pure decision: ``plan_retention(backups, policy, now) -> RetentionPlan``.

No store, no clock, no side effect: the planner only says what to keep and
what to delete, with a reason for each, so it is tested with plain lists and
cannot delete by accident.  The executor deletes exactly what the plan says.

Rules, in order:
1. a backup is expired when its snapshot is strictly older than its kind's max age;
2. the newest ``min_fulls`` full backups (newest in chain order, which no clock
   moves: see :mod:`pgbackup.model.catalog`) are always kept;
3. backups a running restore or drill has leased are kept;
4. everything a kept backup depends on (its parent chain and base full) is kept;
5. an orphan object is deleted after its grace period, unless a kept backup
   names it (a parent whose manifest is missing: the chain may yet be repaired).

Ages are differences of wall-clock times, so the planner first checks that the
clock can be trusted, and deletes *nothing* (every backup kept, a warning in
the plan) when it cannot:
- a backup started or finished after ``now`` (beyond :data:`CLOCK_SKEW`): this
  clock is behind, or the one that took that backup was ahead;
- the newest backup is older than the shortest max age: either backups stopped
  (deleting the last ones then only loses history) or ``now`` jumped ahead.

The caller passes one source's backups (``Catalog.for_source``): another
source's backups are never in the plan, so never deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pgbackup.model.catalog import chain_order
from pgbackup.model.layout import BackupLayout
from pgbackup.model.manifest import BackupManifest, utc_iso
from pgbackup.storage.store import StoredObject, stored_at

log = logging.getLogger(__name__)
# Clocks of the machine that took a backup and of the one planning may differ by this much without alarm.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class RetentionPolicy:
    full_max_age: timedelta
    incremental_max_age: timedelta
    min_fulls: int = 1
    orphan_grace: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        if self.min_fulls < 1:
            raise ValueError("min_fulls must be at least 1: retention never deletes the newest full backup")

    def max_age(self, kind: str) -> timedelta:
        return self.full_max_age if kind == "full" else self.incremental_max_age


@dataclass(frozen=True)
class Decision:
    backup_id: str
    kind: str
    keep: bool
    reason: str


@dataclass(frozen=True)
class RetentionPlan:
    decisions: tuple[Decision, ...]
    orphans_to_delete: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())  # why nothing (or less) is deleted; logged loudly
    orphans_kept: tuple[tuple[str, str], ...] = field(default=())  # (path, reason) of orphans a kept backup names

    @property
    def to_delete(self) -> list[str]:
        return [d.backup_id for d in self.decisions if not d.keep]

    @property
    def kept(self) -> list[str]:
        return [d.backup_id for d in self.decisions if d.keep]

    def log_to(self, logger: logging.Logger) -> None:
        for warning in self.warnings:
            logger.warning("RETENTION REFUSED: %s", warning)
        for d in self.decisions:
            logger.info("%-6s %-32s %s", "keep" if d.keep else "DELETE", d.backup_id, d.reason)
        for path in self.orphans_to_delete:
            logger.info("DELETE orphan %s (no manifest, older than the grace period)", path)
        for path, reason in self.orphans_kept:
            logger.warning("keep   orphan %s: %s", path, reason)


def plan_retention(
    backups: Sequence[BackupManifest],
    policy: RetentionPolicy,
    now: datetime,
    orphans: Iterable[StoredObject] = (),
    leased: dict[str, str] | None = None,
) -> RetentionPlan:
    backups = chain_order(backups)
    by_id = {b.id: b for b in backups}
    reasons: dict[str, str] = {}
    for b in backups:
        age = now - b.started_at
        if age <= policy.max_age(b.kind):
            reasons[b.id] = f"{b.kind} within {_days(policy.max_age(b.kind))} (age {_days(age)})"
    newest_fulls = [b for b in backups if b.kind == "full"][-policy.min_fulls :]
    for b in newest_fulls:
        reasons.setdefault(b.id, f"one of the newest {policy.min_fulls} full backup(s), kept whatever its age")
    for backup_id, purpose in (leased or {}).items():
        if backup_id in by_id:
            reasons.setdefault(backup_id, f"in use by a running {purpose}")
    pending = list(reasons)
    while pending:
        dependant = by_id[pending.pop()]
        for needed in dependant.depends_on:
            if needed in by_id and needed not in reasons:
                reasons[needed] = f"needed by kept backup {dependant.id}"
                pending.append(needed)
    warnings = clock_warnings(backups, policy, now)
    decisions = []
    for b in backups:
        reason = reasons.get(b.id) or f"{b.kind} older than {_days(policy.max_age(b.kind))} (age {_days(now - b.started_at)})"
        keep = b.id in reasons or bool(warnings)
        if keep and b.id not in reasons:
            reason += ", but kept: the clock cannot be trusted"
        decisions.append(Decision(b.id, b.kind, keep, reason))
    named = {needed: b.id for b in backups if b.id in reasons for needed in b.depends_on if needed not in by_id}
    layout = BackupLayout()
    stale, kept_orphans = [], []
    for orphan in orphans:
        owner = named.get(layout.backup_id_of(orphan.path) or "")
        if owner:
            kept_orphans.append((orphan.path, f"kept backup {owner} needs it (its manifest is missing)"))
        elif not warnings and _older_than(orphan.mod_time, now, policy.orphan_grace):
            stale.append(orphan.path)
    return RetentionPlan(decisions=tuple(decisions), orphans_to_delete=tuple(stale), warnings=tuple(warnings), orphans_kept=tuple(kept_orphans))


def clock_warnings(backups: Sequence[BackupManifest], policy: RetentionPolicy, now: datetime) -> list[str]:
    """Why ages measured at ``now`` cannot be trusted (empty when they can); ``backups`` in chain order."""
    if not backups:
        return []
    future = [b for b in backups if max(b.started_at, b.finished_at) > now + CLOCK_SKEW]
    if future:
        b = max(future, key=lambda m: m.finished_at)
        return [f"backup {b.id} finished at {utc_iso(b.finished_at)}, after now ({utc_iso(now)}): this clock is behind or the one that "
                f"took {b.id} was ahead; nothing is deleted until the clocks agree"]
    newest = backups[-1]
    limit = min(policy.full_max_age, policy.incremental_max_age)
    if now - newest.finished_at > limit:
        return [f"the newest backup, {newest.id}, finished {_days(now - newest.finished_at)} before now ({utc_iso(now)}), "
                f"more than the shortest max age ({_days(limit)}): backups stopped or the clock jumped ahead; nothing is deleted"]
    return []


def _older_than(mod_time: str, now: datetime, age: timedelta) -> bool:
    """True when a stored object's modification time is known and older than ``age``; unknown is never old."""
    moment = stored_at(mod_time)
    return moment is not None and now - moment > age


def _days(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 86400:.1f}d"


def apply_plan(plan: RetentionPlan, backups: Sequence[BackupManifest], store, layout: BackupLayout, logger: logging.Logger, *, dry_run: bool) -> list[str]:
    """Delete what ``plan`` says from ``store``: the manifest first, so a crash leaves an orphan, never a manifest without data."""
    by_id = {b.id: b for b in backups}
    deleted = []
    for backup_id in plan.to_delete:
        manifest = by_id[backup_id]
        paths = [layout.manifest_path(manifest.kind, manifest.id), manifest.artifact.path]
        for path in paths:
            if dry_run:
                logger.info("dry run: would delete %s", path)
            else:
                store.delete(path)
                logger.info("deleted %s", path)
        deleted.append(backup_id)
    for path in plan.orphans_to_delete:
        if dry_run:
            logger.info("dry run: would delete orphan %s", path)
        else:
            store.delete(path)
            logger.info("deleted orphan %s", path)
    return deleted
