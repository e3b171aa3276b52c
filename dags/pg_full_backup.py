"""
### Weekly full backup of the shop database

`pg_dump` (custom format) of one exported snapshot → zstd + sha256 in the same
stream → archive check (`pg_restore --list`) → rclone upload → verify the stored
object's size and sha256 → manifest written last (the commit marker) →
retention of remote and local copies.

Settings come from `BACKUP_*` environment variables (see the README); the
source is connection `backup_source`, the remote `backup_remote`.

Trigger with `{"database": "shop"}` (the Trigger form offers the configured
names) to back up only that database. Each committed backup emits an event on
its asset `pgbackup://<remote>/<prefix>/full` (extra: id, kind, bytes, sha256).
Captures share the pool `BACKUP_POOL` (default `pgbackup`, `BACKUP_POOL_SLOTS`
slots): create it with `airflow pools set pgbackup 2 "pg_dumps at once"`, or
the captures wait forever in state scheduled.
"""

from pgbackup.config.settings import BackupSettings
from pgbackup_airflow.dag_defaults import backup_dag
from pgbackup_airflow.pipeline import backup_pipeline, database_params

settings = BackupSettings.from_env()

with backup_dag("pg_full_backup", settings.full_schedule, settings, doc_md=__doc__, tags=["full"],
                params=database_params(settings, what="back up")) as dag:
    backup_pipeline("full", settings)
