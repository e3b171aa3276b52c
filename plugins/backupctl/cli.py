"""``backupctl``: the operator's command line; this module parses the arguments and dispatches to one module per command.

It needs no running scheduler: ``list`` (:mod:`backupctl.listing`), ``restore``
(:mod:`backupctl.restore`), ``verify`` (:mod:`backupctl.verify`), ``retention``
(:mod:`backupctl.retention`) and ``status`` (:mod:`backupctl.status`) talk to the
remotes directly; ``status`` adds Airflow's run history where it is readable.
``full``, ``incremental`` (:mod:`backupctl.backups`) and ``verify --drill`` run a
DAG through the scheduler or ``airflow dags test`` (:mod:`backupctl.airflow_run`);
``logs`` (:mod:`backupctl.logs`) reads task history through the REST API or the
local metadata database (:mod:`backupctl.airflow_history`).  No module of the CLI
imports Airflow or the Airflow layer: it reaches them across process boundaries only.
"""

from __future__ import annotations

import argparse
import logging
import sys

from backupctl.airflow_api import URL_VARIABLE, AirflowApiError
from backupctl.backups import cmd_backup
from backupctl.listing import cmd_list
from backupctl.logs import cmd_logs
from backupctl.restore import cmd_restore
from backupctl.retention import cmd_retention
from backupctl.status import cmd_status
from backupctl.verify import cmd_verify
from pgbackup.config.connections import ConnectionMissing
from pgbackup.config.dag_ids import FULL_BACKUP, INCREMENTAL_BACKUP, RESTORE_DRILL
from pgbackup.config.settings import BackupSettings, SettingsError
from pgbackup.model.manifest import ManifestError
from pgbackup.postgres.target import SourceError, ToolVersionError
from pgbackup.restore.chain import RestoreError
from rclone_provider.client import RcloneError, RemoteConfigError

# What a command may fail with that is worded for the operator: one line, exit code 1, no traceback.
OPERATOR_ERRORS = (
    AirflowApiError, ConnectionMissing, SettingsError, RemoteConfigError, RcloneError, ManifestError, SourceError, ToolVersionError, LookupError,
    FileNotFoundError, RestoreError, ValueError,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backupctl", description="PostgreSQL backups run by Airflow, stored with rclone.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show rclone's and the library's log lines")
    database_help = "with several databases (BACKUP_DATABASES): only this one; restore requires it"
    parser.add_argument("--database", metavar="NAME", help=database_help)
    # Also accepted after the command (`backupctl restore --database shop ...`), where people type it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database", metavar="NAME", default=argparse.SUPPRESS, help=database_help)
    common.add_argument(
        "--source-id", metavar="SYSID/OID", default=argparse.SUPPRESS,
        help="act on this source's backups (as listed when several sources share the remote prefix and the source is unreachable)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    command("full", help=f"take a full backup now (a {FULL_BACKUP} run: through the scheduler when {URL_VARIABLE} is set)").set_defaults(func=cmd_backup)
    command("incremental", help=f"take an incremental backup now (a {INCREMENTAL_BACKUP} run, as for full)").set_defaults(func=cmd_backup)
    p = command("list", help="list the backups in the remote catalog")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)
    p = command(
        "restore",
        help="restore a database to a backup point (no Airflow needed); without --to, print the procedure",
        description="Restore the newest backup, the one named by --backup, or the newest at or before --at into --to.",
    )
    p.add_argument("--to", metavar="URL", help="target, e.g. postgresql://postgres@127.0.0.1:5432/shop_restored (password from PGPASSWORD or ~/.pgpass)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--backup", metavar="ID", help="restore exactly this backup point")
    which.add_argument("--at", metavar="TIME", help="the newest backup at or before TIME (ISO 8601 with a zone)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; download nothing, change nothing")
    p.add_argument("--jobs", type=int, default=2,
                   help="parallel pg_restore jobs for the full backup (default 2; 1 up to what the target server can still accept)")
    p.add_argument("--clean", action="store_true", help="drop and recreate a target database that is not empty")
    p.add_argument("--allow-encoding-change", action="store_true",
                   help="restore into an existing target whose encoding or locale differs from the source's (text is converted)")
    p.add_argument("--replace-source", metavar="NAME",
                   help="allow the target to be the backups' own source database NAME; a safety dump of it goes to the local "
                        "backup folder first")
    p.set_defaults(func=cmd_restore)
    p = command("verify", help="check every stored object's size and sha256, or run a restore drill")
    p.add_argument("--drill", action="store_true", help=f"run the restore drill ({RESTORE_DRILL}) through Airflow")
    p.add_argument("--backup", metavar="ID", help="only this backup")
    p.set_defaults(func=cmd_verify)
    p = command("retention", help="apply the retention policies to the remote and local copies")
    p.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    p.set_defaults(func=cmd_retention)
    p = command("status", help="recent backups, storage, next runs, last drill and warnings (exit 2 when warnings)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)
    p = command("logs", help="recent backup task runs and their errors, newest first")
    p.add_argument("-n", type=int, default=20, help="how many task runs (default 20)")
    p.add_argument("--dag", help="only this DAG")
    p.add_argument("--failed", action="store_true", help="only failed tasks")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_logs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        settings = BackupSettings.from_env()
        return args.func(args, settings)
    except OPERATOR_ERRORS as exc:
        print(f"backupctl: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # python -m backupctl.cli (bin/backupctl on a Python the project is not installed in)
    sys.exit(main())
