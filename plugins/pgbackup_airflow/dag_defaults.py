"""What every backup DAG shares: a cron timetable in the configured zone, no catchup, one run at a time,
retries and timeout from the settings, and failure alerts on every task."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, AssetAll, AssetOrTimeSchedule

from pgbackup.config.settings import BackupSettings
from pgbackup_airflow.alerts import failure_notifiers
from pgbackup_airflow.timetables import backup_timetable


def task_defaults_of(settings: BackupSettings, **overrides) -> dict:
    """Task defaults every DAG shares: owner, retries with backoff, a timeout that kills stuck tools."""
    return {
        "owner": "backup",
        "retries": settings.task_retries,
        "retry_delay": settings.retry_delay,
        "retry_exponential_backoff": True,
        "execution_timeout": settings.task_timeout,
        **overrides,
    }


def backup_dag(dag_id: str, cron: str | None, settings: BackupSettings, *, doc_md: str, tags: list[str],
               task_defaults: dict | None = None, after_assets: list[Asset] | None = None, **dag_kwargs) -> DAG:
    """A DAG on ``cron`` (in ``BACKUP_TIMEZONE``) with the project's defaults; use it as ``with backup_dag(...):``.

    With ``after_assets`` it also runs once every one of them has a new event (``AssetOrTimeSchedule``): the cron
    is then the fallback that still runs when an asset never comes.
    """
    timetable = backup_timetable(cron, settings.timezone) if cron else None  # None: manual runs only
    schedule = AssetOrTimeSchedule(timetable=timetable, assets=AssetAll(*after_assets)) if after_assets else timetable
    return DAG(
        dag_id=dag_id,
        schedule=schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz=settings.timezone),
        catchup=False,
        max_active_runs=1,
        tags=["backup", "postgres", *tags],
        doc_md=doc_md,
        default_args=task_defaults_of(settings, on_failure_callback=failure_notifiers(settings), **(task_defaults or {})),
        **dag_kwargs,
    )
