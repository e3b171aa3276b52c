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

from pgbackup.config.settings import BackupSettings
from pgbackup_airflow.pipeline import backup_kind_dag

dag = backup_kind_dag("incremental", BackupSettings.from_env(), doc_md=__doc__)
