"""
### Restore a backup into a staging database (manual only)

Refreshes a staging database from a backup point: downloads the chain (full +
incrementals), checks every object's sha256, restores, and checks every table's
fingerprint and every sequence against the manifest.

Trigger it from the UI with:
- `target`: one of the staging connections in `BACKUP_STAGING_CONN_IDS` (never a URL);
- `confirm`: the target's database name, typed out — otherwise nothing is touched;
- `backup_id` (empty = the newest), `database` (with several `BACKUP_DATABASES`), `clean` (replace a non-empty target).

It never restores into a source: a target that is the backup's source or any
configured source database is refused. Restoring production after a disaster
stays the CLI's job: `backupctl restore --to ... [--replace-source NAME]`.
"""

from airflow.sdk import Param

from pgbackup.config.dag_ids import RESTORE_TO_STAGING
from pgbackup.config.settings import BackupSettings
from pgbackup_airflow.dag_defaults import backup_dag
from pgbackup_airflow.operators import StagingRestoreOperator
from pgbackup_airflow.pipeline import database_params

settings = BackupSettings.from_env()
staging = list(settings.staging_conn_ids)

with backup_dag(
    RESTORE_TO_STAGING, None, settings, doc_md=__doc__, tags=["restore"], task_defaults={"retries": 0},
    params={
        "target": Param(None, type=["null", "string"], enum=[None, *staging], title="Staging connection",
                        description=f"connection id to restore into ({', '.join(staging) or 'none configured: set BACKUP_STAGING_CONN_IDS'})"),
        "confirm": Param("", type="string", title="Confirm", description="type the target's database name to confirm"),
        "backup_id": Param(None, type=["null", "string"], title="Backup id", description="backup point; empty = the newest"),
        **database_params(settings, what="restore"),
        "clean": Param(False, type="boolean", title="Clean", description="drop and recreate a non-empty target"),
    },
) as dag:
    StagingRestoreOperator(
        task_id="restore_to_staging",
        target_conn_id="{{ params.target or '' }}",
        confirm="{{ params.confirm }}",
        backup_id="{{ params.backup_id or '' }}",
        database="{{ params.database or '' }}",
        clean="{{ params.clean }}",
        allowed_conn_ids=staging,
        sources=[(d.name, d.conn_id, d.prefix) for d in settings.databases],
        rclone_conn_id=settings.remote_conn_id,
        pg_bin_dir=settings.pg_bin_dir,
    )
