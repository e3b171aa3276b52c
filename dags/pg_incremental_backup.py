"""
### Incremental backup every six hours

Stores only the rows changed since the newest backup (upserts and deleted keys
per table, whole tables only for tables without a primary key), all read from
one exported snapshot, then the same check → upload → verify → manifest →
retention chain as the full backup.

It takes a full backup instead — and says why in the log and the manifest —
when no full exists yet, the schema changed, or the parent's row-key state is
not on this machine. It never captures at the same time as a full backup of the
same database (a PostgreSQL advisory lock).
"""

import pendulum
from airflow.sdk import DAG, CronTriggerTimetable

from pgbackup.settings import BackupSettings
from pgbackup_airflow.alerts import failure_notifiers
from pgbackup_airflow.pipeline import backup_pipeline

settings = BackupSettings.from_env()

with DAG(
    dag_id="pg_incremental_backup",
    schedule=CronTriggerTimetable(settings.incremental_schedule, timezone=settings.timezone),
    start_date=pendulum.datetime(2026, 1, 1, tz=settings.timezone),
    catchup=False,
    max_active_runs=1,
    tags=["backup", "postgres", "incremental"],
    doc_md=__doc__,
    default_args=settings.default_args(on_failure_callback=failure_notifiers(settings)),
) as dag:
    backup_pipeline("incremental", settings)
