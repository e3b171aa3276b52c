"""``backupctl retention``: plan and apply the retention policies to the remote and the local copies of each database."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from backupctl.targets import own_catalog, remote_config, selected_databases
from pgbackup.config.settings import BackupSettings
from pgbackup.model.layout import BackupLayout
from pgbackup.policy.retention import apply_plan, plan_retention
from pgbackup.restore.lease import leased_backups
from pgbackup.storage.store import LocalStore
from rclone_provider.client import Rclone

log = logging.getLogger("backupctl")


def cmd_retention(args, settings: BackupSettings) -> int:
    for db in selected_databases(args, settings):
        retention_one(args, settings.for_database(db), heading=f"{db.name}: " if len(settings.databases) > 1 else "")
    return 0


def retention_one(args, settings: BackupSettings, heading: str) -> None:
    layout = BackupLayout(settings.prefix)
    now = datetime.now(timezone.utc)
    targets = [
        ("remote", Rclone(remote_config(settings.remote_conn_id), logger=log), settings.remote_policy()),
        ("local", LocalStore(settings.local_dir), settings.local_policy()),
    ]
    for name, store, policy in targets:
        catalog = own_catalog(store, settings, args)
        plan = plan_retention(catalog.backups, policy, now, orphans=catalog.orphans, leased=leased_backups(store, layout, now))
        print(f"== {heading}{name} copies ({len(plan.decisions)} backups, {len(plan.to_delete)} to delete{', dry run' if args.dry_run else ''})")
        for warning in plan.warnings:
            print(f"  ! RETENTION REFUSED: {warning}")
        if catalog.foreign_warning():
            print(f"  ! {catalog.foreign_warning()}")
        for d in plan.decisions:
            print(f"  {'keep  ' if d.keep else 'DELETE'} {d.backup_id:<32} {d.reason}")
        for path in plan.orphans_to_delete:
            print(f"  DELETE orphan {path}")
        for path, reason in plan.orphans_kept:
            print(f"  keep   orphan {path}: {reason}")
        apply_plan(plan, catalog.backups, store, layout, log, dry_run=args.dry_run)
