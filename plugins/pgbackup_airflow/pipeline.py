"""The task chain both backup DAGs share, so the full and incremental DAG files only differ in what they say."""

from __future__ import annotations

from pgbackup.settings import BackupSettings
from rclone_provider.operators.rclone import RcloneUploadOperator, RcloneVerifyOperator

from pgbackup_airflow.operators import (
    CaptureBackupOperator,
    CheckArchiveOperator,
    CommitManifestOperator,
    RetentionOperator,
)


def backup_pipeline(kind: str, settings: BackupSettings) -> CaptureBackupOperator:
    """capture → check_archive → for each remote: upload → verify → commit_manifest → retention; then local retention.

    Call inside a ``with DAG(...)`` block.  With several remotes (``BACKUP_REMOTE_CONN_ID=a,b``)
    each gets its own branch, suffixed with its connection id: one remote failing fails the
    run (and alerts) while the copies on the others still land.  Returns the capture task.
    """
    local_dir = str(settings.local_dir)
    capture = CaptureBackupOperator(
        task_id="dump_compress_checksum" if kind == "full" else "capture_changes",
        kind=kind,
        postgres_conn_id=settings.source_conn_id,
        rclone_conn_id=settings.remote_conn_id,
        local_dir=local_dir,
        prefix=settings.prefix,
        zstd_level=settings.zstd_level,
        zstd_threads=settings.zstd_threads,
        pg_bin_dir=settings.pg_bin_dir,
    )
    check = CheckArchiveOperator(task_id="check_archive", captured=capture.output, pg_bin_dir=settings.pg_bin_dir)
    capture >> check
    commits = []
    for remote in settings.remote_conn_ids:
        suffix = "" if len(settings.remote_conn_ids) == 1 else f"_{remote}"
        upload = RcloneUploadOperator(
            task_id=f"upload{suffix}", local_path=capture.output["path"], remote_path=capture.output["object_path"], rclone_conn_id=remote
        )
        verify = RcloneVerifyOperator(
            task_id=f"verify{suffix}",
            remote_path=capture.output["object_path"],
            expected_size=capture.output["bytes"],
            expected_sha256=capture.output["sha256"],
            rclone_conn_id=remote,
        )
        commit = CommitManifestOperator(
            task_id=f"commit_manifest{suffix}", captured=capture.output, verification=verify.output,
            rclone_conn_id=remote, local_dir=local_dir, prefix=settings.prefix,
        )
        retention = RetentionOperator(
            task_id=f"retention_remote{suffix}", target="remote", policy=settings.remote_policy(),
            rclone_conn_id=remote, local_dir=local_dir, prefix=settings.prefix,
        )
        check >> upload >> verify >> commit >> retention
        commits.append(commit)
    local_retention = RetentionOperator(
        task_id="retention_local", target="local", policy=settings.local_policy(),
        rclone_conn_id=settings.remote_conn_id, local_dir=local_dir, prefix=settings.prefix,
    )
    commits >> local_retention
    return capture
