"""
### Weekly full backup of the shop database

`pg_dump` (custom format) → zstd + sha256 in the same stream → archive check
(`pg_restore --list`) → rclone upload → verify the stored object's size and
sha256 → manifest written last (the commit marker) → retention of remote and
local copies.

Settings come from `BACKUP_*` environment variables (see the README); the
source is connection `backup_source`, the remote `backup_remote`.
"""

import pendulum
from airflow.sdk import DAG, CronTriggerTimetable

from pgbackup.settings import BackupSettings
from pgbackup_airflow.operators import CheckArchiveOperator, CommitManifestOperator, PgDumpOperator, RetentionOperator
from rclone_provider.operators.rclone import RcloneUploadOperator, RcloneVerifyOperator

settings = BackupSettings.from_env()
local_dir = str(settings.local_dir)

with DAG(
    dag_id="pg_full_backup",
    schedule=CronTriggerTimetable(settings.full_schedule, timezone=settings.timezone),
    start_date=pendulum.datetime(2026, 1, 1, tz=settings.timezone),
    catchup=False,
    max_active_runs=1,
    tags=["backup", "postgres", "full"],
    doc_md=__doc__,
    default_args={"owner": "backup", "retries": settings.task_retries, "retry_delay": settings.retry_delay, "retry_exponential_backoff": True},
) as dag:
    dump = PgDumpOperator(
        task_id="dump_compress_checksum",
        postgres_conn_id=settings.source_conn_id,
        local_dir=local_dir,
        prefix=settings.prefix,
        zstd_level=settings.zstd_level,
        zstd_threads=settings.zstd_threads,
        pg_bin_dir=settings.pg_bin_dir,
    )
    check = CheckArchiveOperator(task_id="check_archive", dump=dump.output, pg_bin_dir=settings.pg_bin_dir)
    upload = RcloneUploadOperator(
        task_id="upload", local_path=dump.output["path"], remote_path=dump.output["object_path"], rclone_conn_id=settings.remote_conn_id
    )
    verify = RcloneVerifyOperator(
        task_id="verify",
        remote_path=dump.output["object_path"],
        expected_size=dump.output["bytes"],
        expected_sha256=dump.output["sha256"],
        rclone_conn_id=settings.remote_conn_id,
    )
    commit = CommitManifestOperator(
        task_id="commit_manifest",
        dump=dump.output,
        verification=verify.output,
        rclone_conn_id=settings.remote_conn_id,
        local_dir=local_dir,
        prefix=settings.prefix,
    )
    retention_remote = RetentionOperator(
        task_id="retention_remote", target="remote", policy=settings.remote_policy(),
        rclone_conn_id=settings.remote_conn_id, local_dir=local_dir, prefix=settings.prefix,
    )
    retention_local = RetentionOperator(
        task_id="retention_local", target="local", policy=settings.local_policy(),
        rclone_conn_id=settings.remote_conn_id, local_dir=local_dir, prefix=settings.prefix,
    )
    dump >> check >> upload >> verify >> commit >> [retention_remote, retention_local]
