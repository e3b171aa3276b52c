"""
### Backup staleness check, hourly

Reads the remote catalog and fails — so the failure alert goes out — when the
newest restorable backup finished longer ago than the RPO plus its grace
(`BACKUP_RPO`, default 6h, + `BACKUP_RPO_GRACE`, default 1h), or the newest
full longer ago than `BACKUP_MAX_FULL_AGE` (default 8d).

It watches the result, not the runs: a scheduler that stopped, a paused DAG or
a backup that never reached the remote all end up here.
"""

import pendulum
from airflow.sdk import DAG, CronTriggerTimetable

from pgbackup.settings import BackupSettings
from pgbackup_airflow.alerts import BackupStalenessOperator, failure_notifiers

settings = BackupSettings.from_env()

with DAG(
    dag_id="pg_backup_staleness",
    schedule=CronTriggerTimetable("0 * * * *", timezone=settings.timezone),
    start_date=pendulum.datetime(2026, 1, 1, tz=settings.timezone),
    catchup=False,
    max_active_runs=1,
    tags=["backup", "postgres", "alerts"],
    doc_md=__doc__,
    default_args=settings.default_args(on_failure_callback=failure_notifiers(settings)),
) as dag:
    BackupStalenessOperator(
        task_id="check_backup_freshness",
        rclone_conn_id=settings.remote_conn_id,
        prefix=settings.prefix,
        rpo=settings.rpo,
        grace=settings.rpo_grace,
        max_full_age=settings.max_full_age,
    )
