"""
### Weekly full backup of the shop database

`pg_dump` (custom format) of one exported snapshot → zstd + sha256 in the same
stream → archive check (`pg_restore --list`) → rclone upload → verify the stored
object's size and sha256 → manifest written last (the commit marker) →
retention of remote and local copies.

Settings come from `BACKUP_*` environment variables (see the README); the
source is connection `backup_source`, the remote `backup_remote`.
"""

import pendulum
from airflow.sdk import DAG, CronTriggerTimetable

from pgbackup.settings import BackupSettings
from pgbackup_airflow.alerts import failure_notifiers
from pgbackup_airflow.pipeline import backup_pipeline

settings = BackupSettings.from_env()

with DAG(
    dag_id="pg_full_backup",
    schedule=CronTriggerTimetable(settings.full_schedule, timezone=settings.timezone),
    start_date=pendulum.datetime(2026, 1, 1, tz=settings.timezone),
    catchup=False,
    max_active_runs=1,
    tags=["backup", "postgres", "full"],
    doc_md=__doc__,
    default_args=settings.default_args(on_failure_callback=failure_notifiers(settings)),
) as dag:
    backup_pipeline("full", settings)
