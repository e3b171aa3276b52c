"""pgbackup: the backup library behind the Airflow DAGs and ``bin/backupctl``.

Plain Python with no Airflow import, so restore and status keep working on a
machine where the scheduler (or the whole Airflow host) is gone.
"""

__version__ = "0.1.0"
TOOL_NAME = "pgbackup"
