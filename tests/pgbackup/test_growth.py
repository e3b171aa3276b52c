"""The storage growth projection at its boundaries: pure, no remote."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from factories import manifest
from pgbackup.policy.retention import RetentionPolicy
from pgbackup.report.growth import MONTH, kept_within, project_storage, weekly_storage

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)  # a Tuesday
WEEK, DAY = timedelta(weeks=1), timedelta(days=1)
POLICY = RetentionPolicy(timedelta(weeks=8), timedelta(days=7), min_fulls=1)
WEEKLY_FULLS = dict(full_interval=WEEK, incremental_interval=timedelta(hours=6))


def full(at: datetime, size: int):
    return manifest("full", at - timedelta(minutes=1), size=size)  # finished_at = at


def test_an_empty_catalog_has_no_history_and_says_why_there_is_no_projection():
    report = project_storage([], POLICY, NOW, **WEEKLY_FULLS)
    assert report.weeks == [] and report.months == []
    assert report.reason == "no full backup yet: nothing to project from" and report.over_quota_at is None


def test_one_full_is_flat_and_kept_once_per_week_of_retention_plus_the_newest():
    report = project_storage([full(NOW - DAY, 1000)], POLICY, NOW, **WEEKLY_FULLS)
    assert report.full_growth_per_day == 0 and report.fulls_kept == 9 and report.incrementals_kept == 0
    assert [m.stored_bytes for m in report.months] == [9000] * 12
    assert datetime.fromisoformat(report.months[-1].at.replace("Z", "+00:00")) == NOW + 12 * MONTH


def test_fulls_growing_in_a_line_grow_the_projection_along_it():
    backups = [full(NOW - 14 * DAY, 1000), full(NOW - 7 * DAY, 1700), full(NOW, 2400)]  # +100 bytes a day
    report = project_storage(backups, POLICY, NOW, **WEEKLY_FULLS)
    assert report.full_growth_per_day == 100
    first = report.months[0]
    assert first.full_bytes == round(2400 + 100 * MONTH / DAY)
    assert first.stored_bytes == 9 * first.full_bytes


def test_fulls_closer_together_than_a_week_give_no_trend():
    """A first deploy: a full of the empty database and the first real one, minutes apart, are not a growth rate."""
    backups = [full(NOW - timedelta(minutes=2), 408), full(NOW, 445_000)]
    report = project_storage(backups, POLICY, NOW, **WEEKLY_FULLS, quota_total=10 * 445_000)
    assert report.full_growth_per_day == 0 and report.over_quota_at is None
    assert all(month.full_bytes == 445_000 for month in report.months)
    spanning = project_storage([full(NOW - 7 * DAY, 408), full(NOW, 445_000)], POLICY, NOW, **WEEKLY_FULLS)
    assert spanning.full_growth_per_day > 0  # a week apart: a trend


def test_incrementals_scale_with_the_full_and_count_per_window():
    backups = [full(NOW - DAY, 1000), manifest("incremental", NOW - timedelta(hours=6), size=100),
               manifest("incremental", NOW - timedelta(hours=1), size=300)]
    report = project_storage(backups, POLICY, NOW, **WEEKLY_FULLS)
    assert report.incrementals_kept == 7 * 4 + 1  # every 6 hours for 7 days, plus the newest
    assert report.months[0].stored_bytes == 9 * 1000 + 29 * 200


def test_a_window_shorter_than_the_interval_still_keeps_min_fulls():
    policy = RetentionPolicy(timedelta(days=3), timedelta(days=1), min_fulls=2)
    report = project_storage([full(NOW, 500)], policy, NOW, **WEEKLY_FULLS)
    assert report.fulls_kept == 2 and report.months[0].stored_bytes == 1000


def test_kept_within_counts_a_backup_exactly_at_the_window_edge():
    assert kept_within(timedelta(weeks=8), WEEK) == 9
    assert kept_within(timedelta(weeks=8) - timedelta(seconds=1), WEEK) == 8
    with pytest.raises(ValueError):
        kept_within(WEEK, timedelta(0))


def test_exactly_at_the_quota_is_within_it_one_byte_more_is_over():
    backups = [full(NOW, 1000)]
    at_quota = project_storage(backups, POLICY, NOW, **WEEKLY_FULLS, quota_total=9000 + 500, quota_used=1000 + 500)
    assert at_quota.other_used == 500 and at_quota.over_quota_at is None
    over = project_storage(backups, POLICY, NOW, **WEEKLY_FULLS, quota_total=9000 + 499, quota_used=1000 + 500)
    assert over.over_quota_at == over.months[0].at and all(m.over_quota for m in over.months)


def test_a_growing_full_crosses_the_quota_in_the_month_it_outgrows_it():
    backups = [full(NOW - 7 * DAY, 1000), full(NOW, 1700)]  # +100 bytes a day; 9 fulls kept
    month3 = round(9 * (1700 + 100 * 3 * MONTH / DAY))
    report = project_storage(backups, POLICY, NOW, **WEEKLY_FULLS, quota_total=month3)
    assert report.months[2].over_quota is False and report.months[3].over_quota is True
    assert report.over_quota_at == report.months[3].at


def test_weekly_history_starts_on_mondays_and_keeps_empty_weeks():
    monday = datetime(2026, 11, 16, 0, 0, tzinfo=timezone.utc)
    backups = [full(monday + timedelta(hours=1), 100), full(monday + timedelta(days=6, hours=23), 50), full(monday + 2 * WEEK, 10)]
    weeks = weekly_storage(backups)
    assert [(w.week, w.added_bytes, w.stored_bytes) for w in weeks] == [
        ("2026-11-16", 150, 150), ("2026-11-23", 0, 150), ("2026-11-30", 10, 160)]
