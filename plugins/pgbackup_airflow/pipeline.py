"""The task chain both backup DAGs share, so the full and incremental DAG files only differ in what they say."""

from __future__ import annotations

from pgbackup.settings import BackupSettings
from pgbackup_airflow.operators import CaptureBackupOperator, CheckArchiveOperator, CommitManifestOperator, RetentionOperator
from rclone_provider.operators.rclone import RcloneUploadOperator, RcloneVerifyOperator


def backup_pipeline(kind: str, settings: BackupSettings) -> CaptureBackupOperator:
    """capture → check_archive → upload → verify → commit_manifest → retention (remote, local).

    Call inside a ``with DAG(...)`` block.  Returns the capture task.
    """
    local_dir = str(settings.local_dir)
    remote = settings.remote_conn_id
    capture = CaptureBackupOperator(
        task_id="dump_compress_checksum" if kind == "full" else "capture_changes",
        kind=kind,
        postgres_conn_id=settings.source_conn_id,
        rclone_conn_id=remote,
        local_dir=local_dir,
        prefix=settings.prefix,
        zstd_level=settings.zstd_level,
        zstd_threads=settings.zstd_threads,
        pg_bin_dir=settings.pg_bin_dir,
    )
    check = CheckArchiveOperator(task_id="check_archive", captured=capture.output, pg_bin_dir=settings.pg_bin_dir)
    upload = RcloneUploadOperator(
        task_id="upload", local_path=capture.output["path"], remote_path=capture.output["object_path"], rclone_conn_id=remote
    )
    verify = RcloneVerifyOperator(
        task_id="verify",
        remote_path=capture.output["object_path"],
        expected_size=capture.output["bytes"],
        expected_sha256=capture.output["sha256"],
        rclone_conn_id=remote,
    )
    commit = CommitManifestOperator(
        task_id="commit_manifest", captured=capture.output, verification=verify.output,
        rclone_conn_id=remote, local_dir=local_dir, prefix=settings.prefix,
    )
    retention = [
        RetentionOperator(
            task_id=f"retention_{target}", target=target, policy=policy,
            rclone_conn_id=remote, local_dir=local_dir, prefix=settings.prefix,
        )
        for target, policy in (("remote", settings.remote_policy()), ("local", settings.local_policy()))
    ]
    capture >> check >> upload >> verify >> commit >> retention
    return capture
