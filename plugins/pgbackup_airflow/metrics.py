"""The backup system's metrics, sent through Airflow's own ``Stats`` (StatsD, Datadog or OpenTelemetry as
``[metrics]`` configures it; nothing when metrics are off).

Names, under Airflow's ``statsd_prefix`` (``airflow.`` by default), one set per database:

- ``pgbackup.backup.<database>.<kind>.bytes`` (gauge) and ``.seconds`` (timer): each committed backup's stored size and
  capture time (manifest ``started_at`` → ``finished_at``); ``.committed`` (counter).
- ``pgbackup.staleness.<database>.newest_age_seconds`` (gauge): age of the newest restorable backup, each hourly check.
- ``pgbackup.drill.<database>.rto_seconds`` (timer) and ``.ok`` (gauge, 1 passed / 0 failed); ``.failed`` (counter).

Airflow's task runner (the scheduler's executors and ``airflow dags test`` alike) sets ``Stats`` up from
``[metrics]`` before a task starts; these functions only name and send.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk.observability import stats


def _name(*parts: str) -> str:
    return stats.normalize_name_for_stats(".".join(("pgbackup", *parts)), log_warning=False)


def backup_committed(database: str, kind: str, stored_bytes: int, took: timedelta) -> None:
    stats.gauge(_name("backup", database, kind, "bytes"), stored_bytes)
    stats.timing(_name("backup", database, kind, "seconds"), took)
    stats.incr(_name("backup", database, kind, "committed"))


def newest_backup_age(database: str, age: timedelta) -> None:
    stats.gauge(_name("staleness", database, "newest_age_seconds"), age.total_seconds())


def drill_finished(database: str, ok: bool, seconds: float) -> None:
    stats.timing(_name("drill", database, "rto_seconds"), timedelta(seconds=seconds))
    stats.gauge(_name("drill", database, "ok"), 1 if ok else 0)
    if not ok:
        stats.incr(_name("drill", database, "failed"))
