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

Trigger with `{"database": "shop"}` (the Trigger form offers the configured
names) to back up only that database. Each committed backup emits an event on
its asset `pgbackup://<remote>/<prefix>/incremental` (extra: id, kind, bytes, sha256).
Captures share the pool `BACKUP_POOL` (default `pgbackup`, `BACKUP_POOL_SLOTS`
slots): create it with `airflow pools set pgbackup 2 "pg_dumps at once"`, or
the captures wait forever in state scheduled.
"""

from pgbackup.config.settings import BackupSettings
from pgbackup_airflow.dag_defaults import backup_dag
from pgbackup_airflow.pipeline import backup_pipeline, database_params

settings = BackupSettings.from_env()

with backup_dag("pg_incremental_backup", settings.incremental_schedule, settings, doc_md=__doc__, tags=["incremental"],
                params=database_params(settings, what="back up")) as dag:
    backup_pipeline("incremental", settings)
