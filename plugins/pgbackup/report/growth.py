"""Storage growth: what the catalog added week by week, and what the remote will hold over the next 12 months.

A pure function of the catalog, the retention policy, the schedules' cadence and
the clock, so ``backupctl status`` and the Backups page show the same numbers,
tested at their boundaries without a remote.

The projection is a deliberate upper bound, in three steps:

1. **Size.**  A full's size grows along the least-squares line through the
   fulls in the catalog (bytes per day; flat with fewer than two fulls, or while
   they span less than ``MIN_TREND_SPAN`` — a first deploy's fulls minutes apart,
   one of an empty database, are no trend to project a year from; never below zero).  An incremental is the mean of those in the catalog, scaled by
   the same factor as the full.
2. **Count.**  Retention keeps every backup younger than its window, so at most
   ``floor(window / interval) + 1`` of each kind are stored at once (and never
   fewer fulls than ``min_fulls``); ``interval`` is how often the schedule runs.
3. **Stored** = fulls × full size + incrementals × incremental size, at the end
   of each of the next 12 months (30.44 days each).

Against a quota (``total``, and ``used`` by everything on the remote), the
projection is over quota when the backups plus what else is stored there
(``used`` less the backups now) are strictly more than ``total``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from pgbackup.model.manifest import BackupManifest, utc_iso
from pgbackup.policy.retention import RetentionPolicy

MONTH = timedelta(days=30.44)
# Fulls closer together than this give no growth trend (see the module docstring).
MIN_TREND_SPAN = timedelta(days=7)
HORIZON_MONTHS = 12


@dataclass(frozen=True)
class WeekOfStorage:
    week: str  # the Monday (UTC) the week starts, YYYY-MM-DD
    added_bytes: int  # stored bytes of the backups finished that week (of those still in the catalog)
    stored_bytes: int  # stored bytes of every backup in the catalog finished by the end of that week


@dataclass(frozen=True)
class MonthProjection:
    month: int  # 1..12 months from now
    at: str
    full_bytes: int  # one full's size then
    stored_bytes: int  # what the retention policy keeps then
    over_quota: bool


@dataclass(frozen=True)
class GrowthReport:
    weeks: list[WeekOfStorage]
    months: list[MonthProjection]
    full_growth_per_day: float  # bytes a full grows by each day (least squares over the fulls)
    fulls_kept: int
    incrementals_kept: int
    quota_total: int | None
    other_used: int  # bytes on the remote that are not these backups (used - backups now), 0 when unknown
    over_quota_at: str | None  # the end of the first projected month over quota, None when none is
    reason: str | None = None  # why there is no projection (no backup yet), else None

    def to_dict(self) -> dict:
        return asdict(self)


def weekly_storage(backups: Sequence[BackupManifest]) -> list[WeekOfStorage]:
    """One entry per week from the oldest backup's week to the newest's, weeks without a backup included."""
    if not backups:
        return []
    by_week: dict[datetime, int] = {}
    for m in backups:
        by_week[_monday(m.finished_at)] = by_week.get(_monday(m.finished_at), 0) + m.artifact.bytes
    week, last = min(by_week), max(by_week)
    weeks, stored = [], 0
    while week <= last:
        added = by_week.get(week, 0)
        stored += added
        weeks.append(WeekOfStorage(week.date().isoformat(), added, stored))
        week += timedelta(weeks=1)
    return weeks


def project_storage(backups: Sequence[BackupManifest], policy: RetentionPolicy, now: datetime, *, full_interval: timedelta,
                    incremental_interval: timedelta, quota_total: int | None = None, quota_used: int | None = None,
                    months: int = HORIZON_MONTHS) -> GrowthReport:
    """The weekly history and the monthly projection (see the module docstring for how it is computed)."""
    weeks = weekly_storage(backups)
    current = sum(m.artifact.bytes for m in backups)
    other_used = max((quota_used or 0) - current, 0) if quota_used is not None else 0
    fulls = sorted((m for m in backups if m.kind == "full"), key=lambda m: m.finished_at)
    if not fulls:
        return GrowthReport(weeks, [], 0.0, 0, 0, quota_total, other_used, None,
                            reason="no full backup yet: nothing to project from")
    if fulls[-1].finished_at - fulls[0].finished_at < MIN_TREND_SPAN:
        slope = 0.0
    else:
        slope = _least_squares_slope([((m.finished_at - fulls[0].finished_at).total_seconds() / 86400, m.artifact.bytes) for m in fulls])
    newest = fulls[-1]
    incrementals = [m.artifact.bytes for m in backups if m.kind == "incremental"]
    incremental_ratio = (sum(incrementals) / len(incrementals) / newest.artifact.bytes) if incrementals and newest.artifact.bytes else 0.0
    fulls_kept = max(policy.min_fulls, kept_within(policy.full_max_age, full_interval))
    incrementals_kept = kept_within(policy.incremental_max_age, incremental_interval) if incrementals else 0
    projected, over_at = [], None
    for month in range(1, months + 1):
        at = now + month * MONTH
        days = (at - newest.finished_at).total_seconds() / 86400
        full_size = round(max(newest.artifact.bytes + slope * days, 0.0))  # whole bytes: what is stored is whole fulls
        stored = round(fulls_kept * full_size + incrementals_kept * full_size * incremental_ratio)
        over = quota_total is not None and stored + other_used > quota_total
        if over and over_at is None:
            over_at = utc_iso(at)
        projected.append(MonthProjection(month, utc_iso(at), full_size, stored, over))
    return GrowthReport(weeks, projected, round(slope, 3), fulls_kept, incrementals_kept, quota_total, other_used, over_at)


def kept_within(window: timedelta, interval: timedelta) -> int:
    """How many backups taken every ``interval`` are younger than ``window`` at once, at most: the newest plus one per interval."""
    if interval <= timedelta(0):
        raise ValueError(f"a schedule interval must be positive, not {interval}")
    return math.floor(window / interval) + 1


def growth_lines(report: dict, human_bytes) -> list[str]:
    """What ``backupctl status`` prints about growth, from ``GrowthReport.to_dict()``."""
    if report.get("reason"):
        return [f"Growth: {report['reason']}"]
    months = report["months"]
    last = months[-1]
    per_week = report["full_growth_per_day"] * 7
    lines = [f"Growth: a full grows {human_bytes(round(per_week))}/week; retention keeps {report['fulls_kept']} fulls and "
             f"{report['incrementals_kept']} incrementals: {human_bytes(months[0]['stored_bytes'])} in 1 month, "
             f"{human_bytes(last['stored_bytes'])} in {last['month']} months"]
    if report["quota_total"] is not None:
        if report["over_quota_at"]:
            lines.append(f"  over the remote's quota of {human_bytes(report['quota_total'])} by {report['over_quota_at'][:10]}")
        else:
            lines.append(f"  within the remote's quota of {human_bytes(report['quota_total'])} for {last['month']} months")
    return lines


def _least_squares_slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def _monday(moment: datetime) -> datetime:
    day = moment.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())
