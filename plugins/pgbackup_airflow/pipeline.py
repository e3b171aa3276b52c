"""The task chain both backup DAGs share, and the DAG around it, so the full and incremental DAG files only differ in what they say."""

from __future__ import annotations

import json

from airflow.sdk import DAG, Param, task_group

from pgbackup.config.dag_ids import BACKUP_DAG_OF_KIND
from pgbackup.config.settings import BackupSettings
from pgbackup_airflow.assets import committed_alias
from pgbackup_airflow.dag_defaults import backup_dag
from pgbackup_airflow.operators import (
    CaptureBackupOperator,
    CheckArchiveOperator,
    CommitManifestOperator,
    RetentionOperator,
)
from rclone_provider.operators.rclone import RcloneUploadOperator, RcloneVerifyOperator

GROUP_ID = "backup"
ONLY_DATABASE = "{{ params.database or '' }}"
# What both backup DAGs' documentation says after their own paragraphs.
TRIGGER_DOC = """
Trigger with `{"database": "shop"}` (the Trigger form offers the configured
names) to back up only that database. Each committed backup emits an event on
its asset `pgbackup://<remote>/<prefix>/%s` (extra: id, kind, bytes, sha256).
Captures share the pool `BACKUP_POOL` (default `pgbackup`, `BACKUP_POOL_SLOTS`
slots): create it with `airflow pools set pgbackup 2 "pg_dumps at once"`, or
the captures wait forever in state scheduled.
"""


def backup_kind_dag(kind: str, settings: BackupSettings, *, doc_md: str) -> DAG:
    """The ``full`` or ``incremental`` backup DAG: its schedule from the settings, a ``database`` Param, the pipeline."""
    cron = settings.full_schedule if kind == "full" else settings.incremental_schedule
    with backup_dag(BACKUP_DAG_OF_KIND[kind], cron, settings, doc_md=doc_md + TRIGGER_DOC % kind, tags=[kind],
                    params=database_params(settings, what="back up")) as dag:
        backup_pipeline(kind, settings)
    return dag


def database_params(settings: BackupSettings, *, what: str) -> dict[str, Param]:
    """The ``database`` Param of a manual trigger: one of the configured names, or empty for every database."""
    names = [d.name for d in settings.databases]
    return {"database": Param(None, type=["null", "string"], enum=[None, *names], title="Database",
                              description=f"{what} only this database; empty = every one ({', '.join(names)})")}


def database_label_template(settings: BackupSettings) -> str:
    """A ``map_index_template`` naming the database of a mapped task instance (``shop`` instead of ``0``).

    The databases are known when the DAG is parsed, so the template indexes a
    literal list; names are plain (see ``SourceDatabase``), the JSON quoting keeps it so.
    """
    return "{{ %s[ti.map_index] }}" % json.dumps([d.name for d in settings.databases])


def database_kwargs(settings: BackupSettings) -> list[dict[str, str]]:
    """One entry per database: what the mapped group expands over."""
    return [{"postgres_conn_id": d.conn_id, "prefix": d.prefix, "database": d.name} for d in settings.databases]


def backup_pipeline(kind: str, settings: BackupSettings):
    """For each database, as one mapped task instance of group ``backup``:
    capture → check_archive → for each remote: upload → verify → commit_manifest → retention; then local retention.

    Call inside a ``with DAG(...)`` block.  Dynamic task mapping gives every
    database (``BACKUP_DATABASES``) its own instances: one database failing
    retries and alerts on its own while the others go on.  With several remotes
    (``BACKUP_REMOTE_CONN_ID=a,b``) each gets its own branch, suffixed with its
    connection id: one remote failing fails the run (and alerts) while the
    copies on the others still land.  A manual run with ``{"database": "shop"}``
    (``database_params``) backs up only that one: the others' captures skip,
    and their whole chain with them.  Every capture takes a slot of the pool
    ``BACKUP_POOL``, so N databases never run more than ``BACKUP_POOL_SLOTS``
    pg_dumps at once.  Returns the mapped group.
    """
    local_dir = str(settings.local_dir)
    label = database_label_template(settings)

    @task_group(group_id=GROUP_ID, default_args={"map_index_template": label})
    def backup(postgres_conn_id: str, prefix: str, database: str) -> None:
        capture = CaptureBackupOperator(
            task_id="dump_compress_checksum" if kind == "full" else "capture_changes",
            kind=kind,
            postgres_conn_id=postgres_conn_id,
            rclone_conn_id=settings.remote_conn_id,
            local_dir=local_dir,
            prefix=prefix,
            zstd_level=settings.zstd_level,
            zstd_threads=settings.zstd_threads,
            pg_bin_dir=settings.pg_bin_dir,
            database=database,
            only_database=ONLY_DATABASE,
            pool=settings.pool,
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
                rclone_conn_id=remote, local_dir=local_dir, prefix=prefix, database=database, outlets=[committed_alias(kind)],
            )
            retention = RetentionOperator(
                task_id=f"retention_remote{suffix}", target="remote", policy=settings.remote_policy(),
                postgres_conn_id=postgres_conn_id, rclone_conn_id=remote, local_dir=local_dir, prefix=prefix,
            )
            check >> upload >> verify >> commit >> retention
            commits.append(commit)
        local_retention = RetentionOperator(
            task_id="retention_local", target="local", policy=settings.local_policy(),
            postgres_conn_id=postgres_conn_id, rclone_conn_id=settings.remote_conn_id, local_dir=local_dir, prefix=prefix,
        )
        commits >> local_retention

    return backup.expand_kwargs(database_kwargs(settings))
