"""Configuration from the environment: ``BACKUP_*`` settings and Airflow-style ``AIRFLOW_CONN_*`` connections,
read without Airflow so a restore works where Airflow is gone."""
