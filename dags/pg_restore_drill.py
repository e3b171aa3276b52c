"""
### Restore drill

Restores the newest backup point (full + incrementals) from the remote into a
scratch database, checks every table's fingerprint and every sequence against
the manifest, drops the scratch database and records the result (pass/fail and
the time taken — the measured RTO) on the remote for `backupctl status`.

Runs weekly after the full backup and on demand (`backupctl verify --drill`,
or trigger with `{"backup_id": "..."}` to drill a chosen backup). The scratch
server is connection `backup_drill`, or the source's server when it is not set.
"""

import pendulum
from airflow.sdk import DAG, CronTriggerTimetable, Param

from pgbackup.settings import BackupSettings
from pgbackup_airflow.alerts import failure_notifiers
from pgbackup_airflow.operators import RestoreDrillOperator

settings = BackupSettings.from_env()

with DAG(
    dag_id="pg_restore_drill",
    schedule=CronTriggerTimetable(settings.drill_schedule, timezone=settings.timezone),
    start_date=pendulum.datetime(2026, 1, 1, tz=settings.timezone),
    catchup=False,
    max_active_runs=1,
    tags=["backup", "postgres", "drill"],
    doc_md=__doc__,
    params={"backup_id": Param(None, type=["null", "string"], description="backup to drill; empty = the newest")},
    default_args=settings.default_args(retries=0, on_failure_callback=failure_notifiers(settings)),
) as dag:
    RestoreDrillOperator(
        task_id="restore_and_check",
        backup_id="{{ params.backup_id or '' }}",
        drill_conn_id=settings.drill_conn_id,
        source_conn_id=settings.source_conn_id,
        rclone_conn_id=settings.remote_conn_id,
        prefix=settings.prefix,
        pg_bin_dir=settings.pg_bin_dir,
    )
