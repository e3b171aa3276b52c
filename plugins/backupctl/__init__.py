"""``backupctl``: the operator's command line, above the library.  It talks to Airflow only through its REST API
or its own command (``airflow dags test``), never by importing the library into Airflow's side."""
