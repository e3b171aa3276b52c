"""Retention as a pure decision: ``plan_retention(backups, policy, now) -> RetentionPlan``.

No store, no clock, no side effect: the planner only says what to keep and
what to delete, with a reason for each, so it is tested with plain lists and
cannot delete by accident.  The executor deletes exactly what the plan says.

Rules, in order:
1. a backup is expired when its snapshot is strictly older than its kind's max age;
2. the newest ``min_fulls`` full backups are always kept;
3. backups a running restore or drill has leased are kept;
4. everything a kept backup depends on (its parent chain and base full) is kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rclone_provider.client import StoredObject

from pgbackup.layout import BackupLayout
from pgbackup.manifest import BackupManifest, parse_utc

log = logging.getLogger(__name__)


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

    @property
    def to_delete(self) -> list[str]:
        return [d.backup_id for d in self.decisions if not d.keep]

    @property
    def kept(self) -> list[str]:
        return [d.backup_id for d in self.decisions if d.keep]

    def log_to(self, logger: logging.Logger) -> None:
        for d in self.decisions:
            logger.info("%-6s %-32s %s", "keep" if d.keep else "DELETE", d.backup_id, d.reason)
        for path in self.orphans_to_delete:
            logger.info("DELETE orphan %s (no manifest, older than the grace period)", path)


def plan_retention(
    backups: Sequence[BackupManifest],
    policy: RetentionPolicy,
    now: datetime,
    orphans: Iterable[StoredObject] = (),
    leased: dict[str, str] | None = None,
) -> RetentionPlan:
    by_id = {b.id: b for b in backups}
    reasons: dict[str, str] = {}
    for b in backups:
        age = now - b.started_at
        if age <= policy.max_age(b.kind):
            reasons[b.id] = f"{b.kind} within {_days(policy.max_age(b.kind))} (age {_days(age)})"
    newest_fulls = sorted((b for b in backups if b.kind == "full"), key=lambda b: b.started_at)[-policy.min_fulls :]
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
    decisions = tuple(
        Decision(b.id, b.kind, b.id in reasons, reasons.get(b.id) or f"{b.kind} older than {_days(policy.max_age(b.kind))} (age {_days(now - b.started_at)})")
        for b in sorted(backups, key=lambda b: b.started_at)
    )
    stale = tuple(o.path for o in orphans if _older_than(o.mod_time, now, policy.orphan_grace))
    return RetentionPlan(decisions=decisions, orphans_to_delete=stale)


def _older_than(mod_time: str, now: datetime, age: timedelta) -> bool:
    """True when a stored object's modification time is known and older than ``age``; unknown is never old."""
    try:
        moment = parse_utc(re.sub(r"(\.\d{6})\d+", r"\1", mod_time))
    except ValueError:
        return False
    return now - moment > age


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
