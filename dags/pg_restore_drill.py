"""
### Restore drill

Restores the newest backup point (full + incrementals) from the remote into a
scratch database, checks every table's fingerprint and every sequence against
the manifest, drops the scratch database and records the result (pass/fail and
the time taken — the measured RTO) on the remote for `backupctl status`.

Runs after the full backup — once every database's full has emitted its
asset event (`AssetOrTimeSchedule`), with the weekly `BACKUP_DRILL_SCHEDULE`
as the fallback — and on demand (`backupctl verify --drill`,
or trigger with `{"backup_id": "..."}` to drill a chosen backup). The scratch
server is connection `backup_drill`, or the source's server when it is not set.

With several databases (`BACKUP_DATABASES`) every database is drilled as its own
mapped task instance; trigger with `{"database": "shop"}` to drill only one
(and `{"database": "shop", "backup_id": "..."}` for a chosen backup of it).

On a first deploy (nothing ever stored, or only the first backup's object, its manifest
not yet written) each instance skips: nothing to drill yet, no alert.
"""

from airflow.sdk import Param

from pgbackup.config.dag_ids import RESTORE_DRILL
from pgbackup.config.settings import BackupSettings
from pgbackup_airflow.assets import full_backup_assets
from pgbackup_airflow.dag_defaults import backup_dag
from pgbackup_airflow.operators import RestoreDrillOperator
from pgbackup_airflow.pipeline import database_label_template, database_params

settings = BackupSettings.from_env()

with backup_dag(
    RESTORE_DRILL, settings.drill_schedule, settings, doc_md=__doc__, tags=["drill"], task_defaults={"retries": 0},
    after_assets=full_backup_assets(settings),
    params={
        "backup_id": Param(None, type=["null", "string"], title="Backup id", description="backup to drill; empty = the newest"),
        **database_params(settings, what="drill"),
    },
) as dag:
    RestoreDrillOperator.partial(
        task_id="restore_and_check",
        backup_id="{{ params.backup_id or '' }}",
        only_database="{{ params.database or '' }}",
        several_databases=len(settings.databases) > 1,
        drill_conn_id=settings.drill_conn_id,
        rclone_conn_id=settings.remote_conn_id,
        pg_bin_dir=settings.pg_bin_dir,
        in_flight=settings.orphan_grace,
        map_index_template=database_label_template(settings),
    ).expand_kwargs([{"database": d.name, "source_conn_id": d.conn_id, "prefix": d.prefix} for d in settings.databases])
