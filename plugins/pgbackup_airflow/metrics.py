"""The backup system's metrics, sent through Airflow's own ``Stats`` (StatsD, Datadog or OpenTelemetry as
``[metrics]`` configures it; nothing when metrics are off).

Names, under Airflow's ``statsd_prefix`` (``airflow.`` by default), one set per database:

- ``pgbackup.backup.<database>.<kind>.bytes`` (gauge) and ``.seconds`` (timer): each committed backup's stored size and
  capture time (manifest ``started_at`` → ``finished_at``); ``.committed`` (counter).
- ``pgbackup.staleness.<database>.newest_age_seconds`` (gauge): age of the newest restorable backup, each hourly check.
- ``pgbackup.drill.<database>.rto_seconds`` (timer) and ``.ok`` (gauge, 1 passed / 0 failed); ``.failed`` (counter).

A task run by the scheduler's task runner has ``Stats`` set up already; ``airflow dags test`` runs tasks in its own
process without that step, so the first metric sets it up from the same configuration.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk.observability import stats

_ready = False


def _stats():
    global _ready
    if not _ready:
        from airflow.sdk.configuration import conf
        from airflow.sdk.observability.metrics import stats_utils

        stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=conf.getboolean("metrics", "legacy_names_on"))
        _ready = True
    return stats


def _name(*parts: str) -> str:
    return stats.normalize_name_for_stats(".".join(("pgbackup", *parts)), log_warning=False)


def backup_committed(database: str, kind: str, stored_bytes: int, took: timedelta) -> None:
    s = _stats()
    s.gauge(_name("backup", database, kind, "bytes"), stored_bytes)
    s.timing(_name("backup", database, kind, "seconds"), took)
    s.incr(_name("backup", database, kind, "committed"))


def newest_backup_age(database: str, age: timedelta) -> None:
    _stats().gauge(_name("staleness", database, "newest_age_seconds"), age.total_seconds())


def drill_finished(database: str, ok: bool, seconds: float) -> None:
    s = _stats()
    s.timing(_name("drill", database, "rto_seconds"), timedelta(seconds=seconds))
    s.gauge(_name("drill", database, "ok"), 1 if ok else 0)
    if not ok:
        s.incr(_name("drill", database, "failed"))
