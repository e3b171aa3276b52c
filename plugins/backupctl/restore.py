"""``backupctl restore``: a database put back to a backup point from the first remote that can serve it; no Airflow needed.

Without ``--to`` it prints the procedure for this installation.  With it, it
plans the chain (``--backup``, ``--at`` or the newest), prints the plan, and
restores, falling back to the next remote when one cannot serve the chain
before anything was applied.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from datetime import datetime, timezone

from backupctl.targets import one_database, own_catalog, remote_config
from pgbackup.config.connections import env_var
from pgbackup.config.settings import BackupSettings
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from pgbackup.postgres.target import PgTarget
from pgbackup.report.humanize import human_bytes
from pgbackup.restore.chain import ChainRestore, ObjectUnavailable, RestoreError, choose_chain, configured_source_identities
from rclone_provider.client import Rclone, RcloneError, RemoteConfigError

log = logging.getLogger("backupctl")


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--at {text!r} is not an ISO 8601 time (e.g. 2026-11-29T14:00:00+01:00)") from None
    if moment.tzinfo is None:
        raise ValueError(f"--at {text!r} has no time zone; add one, e.g. {text}Z or {text}+01:00")
    return moment.astimezone(timezone.utc)


def restore_target(url: str) -> PgTarget:
    target = PgTarget.from_url(url)
    if target.password is not None:
        raise ValueError(
            "--to must not contain a password: a command line is visible to every user in `ps`. "
            "Put it in PGPASSWORD or ~/.pgpass instead"
        )
    if os.environ.get("PGPASSWORD"):
        target = dataclasses.replace(target, password=os.environ["PGPASSWORD"])
    return target


def cmd_restore(args, settings: BackupSettings) -> int:
    """Restore from the first remote holding an intact copy of the chain; the next ones are fallbacks."""
    option = f" --database {args.database}" if len(settings.databases) > 1 else ""
    configured_sources = [(db.name, db.conn_id) for db in settings.databases]
    settings = one_database(args, settings)
    layout = BackupLayout(settings.prefix)
    if not args.to:
        remote = Rclone(remote_config(settings.remote_conn_id), logger=log)
        print_restore_procedure(remote, Catalog.load(remote, layout), settings, option)
        return 0
    target = restore_target(args.to)
    at = parse_time(args.at) if args.at else None
    remotes = settings.remote_conn_ids
    for position, conn_id in enumerate(remotes, 1):
        fallback = position < len(remotes)
        try:
            remote = Rclone(remote_config(conn_id), logger=log)
            chain = choose_chain(own_catalog(remote, settings, args), backup_id=args.backup, at=at)
        except (RcloneError, RemoteConfigError, RestoreError, LookupError) as exc:
            if not fallback:
                raise
            print(f"Remote {conn_id} cannot serve this restore ({exc}); trying {remotes[position]}", file=sys.stderr)
            continue
        total = sum(m.artifact.bytes for m in chain)
        print(f"Restore plan: {chain[-1].id} into {target.describe()} from remote {conn_id} "
              f"({len(chain)} object(s), {human_bytes(total)} to download)")
        for step, m in enumerate(chain, 1):
            print(f"  {step}. {m.kind:<11} {m.id}  {human_bytes(m.artifact.bytes):>10}  snapshot {m.started_at.astimezone():%Y-%m-%d %H:%M:%S %Z}")
        if args.dry_run:
            print("Dry run: nothing downloaded, nothing changed.")
            return 0
        logging.getLogger().setLevel(logging.INFO)
        try:
            report = ChainRestore(remote, layout, pg_bin_dir=settings.pg_bin_dir, logger=log).run(
                chain, target, jobs=args.jobs, clean=args.clean, allow_encoding_change=args.allow_encoding_change,
                replace_source=args.replace_source, protected=configured_source_identities(configured_sources, log),
                safety_dir=settings.local_dir / "safety",
            )
        except ObjectUnavailable as exc:
            if not fallback:
                raise
            print(f"Remote {conn_id}: {exc}; nothing was applied, trying {remotes[position]}", file=sys.stderr)
            continue
        print(f"Restored {report.backup_id} into {target.describe()} in {report.seconds:.1f}s: "
              f"{report.tables} tables, {report.rows} rows; every table's fingerprint and every sequence match the backup.")
        for step_name, step_seconds in report.steps.items():
            print(f"  {step_name:<48} {step_seconds:7.1f}s")
        if report.safety_dump:
            print(f"What {target.dbname} held before is in the safety dump {report.safety_dump}")
        return 0
    raise AssertionError("unreachable: the last remote either restores or raises")


def print_restore_procedure(remote: Rclone, catalog: Catalog, settings: BackupSettings, option: str = "") -> None:
    """What the seed's `restore` printed: how to restore, for this installation."""
    print(f"Backups are stored at {remote.remote.spec(settings.prefix)} ({len(catalog.backups)} backups).")
    for m in catalog.backups[-5:]:
        print(f"  {m.id:<28} {m.kind:<11} {human_bytes(m.artifact.bytes):>10}  {m.started_at.astimezone():%Y-%m-%d %H:%M %Z}")
    print(
        "\nTo restore (needs only this project, rclone and PostgreSQL client tools; no Airflow):\n"
        f"  1. Make the remote reachable: export {env_var(settings.remote_conn_id)}='<the backup_remote connection JSON>'\n"
        "  2. Put the target server's password in PGPASSWORD or ~/.pgpass (never on the command line).\n"
        f"  3. Check the plan:   bin/backupctl restore{option} --to postgresql://USER@HOST:5432/DBNAME --dry-run\n"
        f"  4. Restore:          bin/backupctl restore{option} --to postgresql://USER@HOST:5432/DBNAME"
        " [--at 2026-11-29T14:00:00+01:00 | --backup ID] [--jobs 4] [--clean]\n"
        "The target database is created if missing, with the source's encoding and locale; a non-empty one is refused unless\n"
        "--clean is given, and the source database itself unless --replace-source names it (a safety dump is taken first).\n"
        "The restore checks every object's sha256 before it changes anything, and every table against the backup afterwards."
    )


