"""The backup DAGs' ids: written here once, read by the DAG files, the CLI, the Backups page and the reports.

A constant module of the library (no Airflow import), so the CLI can name a DAG
it triggers without importing the Airflow layer.
"""

FULL_BACKUP = "pg_full_backup"
INCREMENTAL_BACKUP = "pg_incremental_backup"
RESTORE_DRILL = "pg_restore_drill"
STALENESS_CHECK = "pg_backup_staleness"
RESTORE_TO_STAGING = "pg_restore_to_staging"

BACKUP_DAG_OF_KIND = {"full": FULL_BACKUP, "incremental": INCREMENTAL_BACKUP}
# The DAGs whose runs and task history status and logs report (staging restores are a manual chore, not a backup).
BACKUP_DAGS = (FULL_BACKUP, INCREMENTAL_BACKUP, RESTORE_DRILL, STALENESS_CHECK)
