"""
### Backup staleness check, hourly

Reads the remote catalog and fails — so the failure alert goes out — when the
newest restorable backup finished longer ago than the RPO plus its grace
(`BACKUP_RPO`, default 6h, + `BACKUP_RPO_GRACE`, default 1h), or the newest
full longer ago than `BACKUP_MAX_FULL_AGE` (default 8d).

It watches the result, not the runs: a scheduler that stopped, a paused DAG or
a backup that never reached the remote all end up here. Every database
(`BACKUP_DATABASES`) is checked by its own mapped task instance. Before the
first backup ever lands (a first deploy) the check skips: nothing to watch yet —
also while the first backup's object is stored and its manifest not yet
(for up to `BACKUP_ORPHAN_GRACE`).
"""

from pgbackup.config.dag_ids import STALENESS_CHECK
from pgbackup.config.settings import BackupSettings
from pgbackup_airflow.alerts import BackupStalenessOperator
from pgbackup_airflow.dag_defaults import backup_dag
from pgbackup_airflow.pipeline import database_label_template

settings = BackupSettings.from_env()

with backup_dag(STALENESS_CHECK, "0 * * * *", settings, doc_md=__doc__, tags=["alerts"]) as dag:
    # One mapped instance per database: a stale database fails (and alerts) by name, the others stay green.
    BackupStalenessOperator.partial(
        task_id="check_backup_freshness",
        rclone_conn_id=settings.remote_conn_id,
        rpo=settings.rpo,
        grace=settings.rpo_grace,
        max_full_age=settings.max_full_age,
        in_flight=settings.orphan_grace,
        map_index_template=database_label_template(settings),
    ).expand_kwargs([{"prefix": d.prefix, "source_conn_id": d.conn_id, "database": d.name} for d in settings.databases])
