"""``backupctl full`` and ``incremental``: run the backup DAG now, then show what it committed for each database."""

from __future__ import annotations

import sys

from backupctl.airflow_run import run_dag_now
from backupctl.targets import own_catalog, remote_config
from pgbackup.config.dag_ids import BACKUP_DAG_OF_KIND
from pgbackup.config.settings import BackupSettings
from pgbackup.model.layout import BackupLayout
from pgbackup.report.humanize import human_bytes
from rclone_provider.client import Rclone


def cmd_backup(args, settings: BackupSettings) -> int:
    """``full`` and ``incremental``: run the DAG now, then show the backup it committed."""
    dag_id = BACKUP_DAG_OF_KIND[args.command]
    if args.database:
        settings.database(args.database)
        print(f"backupctl: error: {args.command} backs up every configured database ({settings.database_names()}); "
              f"drop --database", file=sys.stderr)
        return 1
    if not run_dag_now(dag_id, args.verbose):
        return 1
    worst = 0
    for db in settings.databases:
        worst = max(worst, show_latest(dag_id, settings.for_database(db), db.name if len(settings.databases) > 1 else None, args))
    return worst


def show_latest(dag_id: str, settings: BackupSettings, name: str | None, args) -> int:
    """What the run just committed for one database: the newest backup of its own source."""
    remote = Rclone(remote_config(settings.remote_conn_id))
    catalog = own_catalog(remote, settings, args)
    latest = catalog.backups[-1] if catalog.backups else None
    if latest is None:
        print(f"backupctl: {dag_id} succeeded but the catalog holds no backup", file=sys.stderr)
        return 1
    label = ("Full" if latest.kind == "full" else "Incremental") + (f" backup of {name}" if name else " backup")
    print(f"{label} {latest.id}: {human_bytes(latest.artifact.bytes)}, sha256 {latest.artifact.sha256}")
    if latest.details.get("promoted_from_incremental"):
        print(f"  taken as a full backup because {latest.details['promoted_from_incremental']}")
    if latest.parent_id:
        print(f"  parent {latest.parent_id}, base full {latest.base_full_id}")
    print(f"  stored at {remote.remote.spec(latest.artifact.path)}")
    print(f"  manifest  {remote.remote.spec(BackupLayout(settings.prefix).manifest_path(latest.kind, latest.id))}")
    return 0

