"""An rclone provider for Airflow: a plain client library, a hook over it, operators over the hook.

``rclone_provider.client`` has no Airflow import so disaster-recovery tools can use
it on a machine where Airflow is gone; ``hooks`` and ``operators`` are the Airflow face.
"""
