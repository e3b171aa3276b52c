"""The Airflow face of the backup library: operators the DAGs wire together.

Each operator does one step and keeps the mechanism in ``pgbackup`` (dump,
archive check, manifest, retention) or ``rclone_provider`` (storage).
"""
