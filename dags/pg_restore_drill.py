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

from airflow.sdk import Param

from pgbackup.settings import BackupSettings
from pgbackup_airflow.dag_defaults import backup_dag
from pgbackup_airflow.operators import RestoreDrillOperator

settings = BackupSettings.from_env()

with backup_dag(
    "pg_restore_drill", settings.drill_schedule, settings, doc_md=__doc__, tags=["drill"], task_defaults={"retries": 0},
    params={"backup_id": Param(None, type=["null", "string"], description="backup to drill; empty = the newest")},
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
