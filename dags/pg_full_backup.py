"""
### Weekly full backup of the shop database

`pg_dump` (custom format) of one exported snapshot → zstd + sha256 in the same
stream → archive check (`pg_restore --list`) → rclone upload → verify the stored
object's size and sha256 → manifest written last (the commit marker) →
retention of remote and local copies.

Settings come from `BACKUP_*` environment variables (see the README); the
source is connection `backup_source`, the remote `backup_remote`.
"""

from pgbackup.config.settings import BackupSettings
from pgbackup_airflow.pipeline import backup_kind_dag

dag = backup_kind_dag("full", BackupSettings.from_env(), doc_md=__doc__)
