"""``backupctl verify``: every stored object checked against its manifest, or (``--drill``) a restore drill run through Airflow."""

from __future__ import annotations

import logging

from backupctl.airflow_run import run_dag_now
from backupctl.targets import own_catalog, remote_config, selected_databases
from pgbackup.config.dag_ids import RESTORE_DRILL
from pgbackup.config.settings import BackupSettings, SettingsError
from pgbackup.model.catalog import Catalog, SourceAmbiguous
from pgbackup.model.layout import BackupLayout
from rclone_provider.client import Rclone, RcloneError, VerificationError

log = logging.getLogger("backupctl")


def cmd_verify(args, settings: BackupSettings) -> int:
    """Check every stored object against its manifest, or (``--drill``) run the restore drill through Airflow."""
    if args.drill:
        if args.backup and len(settings.databases) > 1 and not args.database:
            raise SettingsError(f"--backup with several databases ({settings.database_names()}): add --database")
        conf = {"backup_id": args.backup, "database": args.database and settings.database(args.database).name}
        conf = {k: v for k, v in conf.items() if v}
        return 0 if run_dag_now(RESTORE_DRILL, args.verbose, conf=conf or None) else 1
    databases = selected_databases(args, settings)
    if args.backup and len(databases) > 1:
        raise SettingsError(f"--backup with several databases ({settings.database_names()}): add --database")
    failed = 0
    for db in databases:
        if len(databases) > 1:
            print(f"== {db.name} ==")
        failed |= verify_one(args, settings.for_database(db))
    return failed


def verify_one(args, settings: BackupSettings) -> int:
    remote = Rclone(remote_config(settings.remote_conn_id), logger=log)
    try:
        catalog = own_catalog(remote, settings, args)
    except SourceAmbiguous as exc:
        print(f"note: {exc}; checking every source's backups")
        catalog = Catalog.load(remote, BackupLayout(settings.prefix))
    chosen = [catalog.get(args.backup)] if args.backup else catalog.backups
    failures = list(catalog.problems)
    for m in chosen:
        try:
            method = remote.verify(m.artifact.path, size=m.artifact.bytes, sha256=m.artifact.sha256)
            print(f"ok       {m.id:<28} {m.artifact.path} ({method})")
        except (VerificationError, RcloneError) as exc:
            failures.append(f"backup {m.id}: {exc}")
            print(f"DAMAGED  {m.id:<28} {exc}")
    for problem in catalog.problems:
        print(f"PROBLEM  {problem}")
    print(f"{len(chosen)} backup(s) checked, {len(failures)} problem(s)")
    return 1 if failures else 0

