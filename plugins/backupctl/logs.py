"""``backupctl logs``: the latest task runs of the backup DAGs, newest first, with the error line of each failure."""

from __future__ import annotations

import sys

from backupctl.airflow_api import URL_VARIABLE
from backupctl.airflow_history import HistoryUnavailable, task_history
from backupctl.output import dump_json, print_table
from pgbackup.config.settings import BackupSettings


def cmd_logs(args, settings: BackupSettings) -> int:
    """Recent task runs: from the REST API when an api-server is configured, else from the metadata database."""
    database = settings.database(args.database).name if args.database else None
    try:
        records = task_history(limit=args.n, dag_id=args.dag, failed_only=args.failed, database=database)
    except HistoryUnavailable as exc:
        print(f"backupctl: error: Airflow is not reachable from here ({exc}): set {URL_VARIABLE} (and its credentials) "
              "for a deployment's api-server, or AIRFLOW_HOME for a local one", file=sys.stderr)
        return 1
    if args.json:
        dump_json([r.to_dict() for r in records])
        return 0
    if not records:
        print("No task runs recorded.")
        return 0
    rows = [[r.start.astimezone().strftime("%Y-%m-%d %H:%M:%S") if r.start else "-", r.dag_id, r.task_id, r.database or "-",
             r.shown_state or "-", f"{r.seconds:.1f}s" if r.seconds is not None else "-", r.error or ""] for r in records]
    print_table(rows, ["STARTED", "DAG", "TASK", "DATABASE", "STATE", "TOOK", "ERROR"])
    return 0
