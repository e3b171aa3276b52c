"""What every backup DAG shares: a cron timetable in the configured zone, no catchup, one run at a time,
retries and timeout from the settings, and failure alerts on every task."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from pgbackup.settings import BackupSettings
from pgbackup_airflow.alerts import failure_notifiers
from pgbackup_airflow.timetables import backup_timetable


def backup_dag(dag_id: str, cron: str, settings: BackupSettings, *, doc_md: str, tags: list[str],
               task_defaults: dict | None = None, **dag_kwargs) -> DAG:
    """A DAG on ``cron`` (in ``BACKUP_TIMEZONE``) with the project's defaults; use it as ``with backup_dag(...):``."""
    return DAG(
        dag_id=dag_id,
        schedule=backup_timetable(cron, settings.timezone),
        start_date=pendulum.datetime(2026, 1, 1, tz=settings.timezone),
        catchup=False,
        max_active_runs=1,
        tags=["backup", "postgres", *tags],
        doc_md=doc_md,
        default_args=settings.default_args(on_failure_callback=failure_notifiers(settings), **(task_defaults or {})),
        **dag_kwargs,
    )
