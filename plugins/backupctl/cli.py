"""``backupctl``: the operator's command line.

It needs no running scheduler: ``list``, ``restore``, ``verify``, ``retention``
and ``status`` talk to the remotes directly (``status`` adds Airflow's run
history when its metadata database is reachable).  ``full``, ``incremental`` and
``verify --drill`` trigger a DAG run through Airflow's REST API when an
api-server is configured (``BACKUP_AIRFLOW_API_URL``, see
:mod:`backupctl.airflow_api`), so the scheduler runs it like any other; without
one (the embedded demo) they run the DAG in-process with ``airflow dags test``.
``logs`` reads task history and logs through the same API when configured, else
from the metadata database.  Airflow itself is only imported inside the commands
that need it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from backupctl.airflow_api import URL_VARIABLE, AirflowApi, AirflowApiError
from pgbackup.config.connections import ConnectionMissing, env_var, pg_target_from_env, remote_from_env
from pgbackup.config.settings import PROJECT_DIR, BackupSettings, SettingsError, SourceDatabase
from pgbackup.model.catalog import Catalog, SourceAmbiguous
from pgbackup.model.identity import SourceIdentity
from pgbackup.model.layout import BackupLayout
from pgbackup.model.manifest import ManifestError
from pgbackup.policy.retention import apply_plan, plan_retention
from pgbackup.postgres.sources import own_backups, reachable_source_identity
from pgbackup.postgres.target import PgTarget, SourceError, ToolVersionError
from pgbackup.report.growth import growth_lines
from pgbackup.report.humanize import human_bytes
from pgbackup.report.status import collect_status, next_run, other_remotes
from pgbackup.restore.chain import ChainRestore, ObjectUnavailable, RestoreError, choose_chain, configured_source_identities
from pgbackup.restore.lease import leased_backups
from pgbackup.storage.store import LocalStore
from rclone_provider.client import (
    Rclone,
    RcloneError,
    RemoteConfig,
    RemoteConfigError,
    VerificationError,
)

log = logging.getLogger("backupctl")


class RemoteRootMissing(LookupError):
    """The remote's root folder does not exist: not the same as a remote holding no backups."""


OPERATOR_ERRORS = (
    AirflowApiError, ConnectionMissing, SettingsError, RemoteConfigError, RcloneError, ManifestError, SourceError, ToolVersionError, LookupError,
    FileNotFoundError,
)


def remote_config(conn_id: str) -> RemoteConfig:
    """The remote from ``AIRFLOW_CONN_<ID>``, else from Airflow's own connection store when Airflow is installed."""
    try:
        return remote_from_env(conn_id)
    except ConnectionMissing as missing:
        try:
            from airflow.models.connection import Connection
        except ImportError:
            raise missing from None
        try:
            conn = Connection.get_connection_from_secrets(conn_id)
        except Exception:
            raise missing from None
        return RemoteConfig.from_extra(conn_id, conn.extra_dejson)


def source_identity(settings: BackupSettings) -> SourceIdentity | None:
    """The identity of the configured source database, or None when its connection is not here or it cannot be reached."""
    try:
        target = pg_target_from_env(settings.source_conn_id)
    except ConnectionMissing:
        return None
    return reachable_source_identity(target)


def own_catalog(store, settings: BackupSettings, args) -> Catalog:
    """The catalog of this installation's source only: ``--source-id`` when given, else the source database's identity.

    Raises :class:`SourceAmbiguous` (one line listing the sources) when several
    sources' backups are stored here and neither says which is meant.
    """
    catalog = Catalog.load(store, BackupLayout(settings.prefix))
    source_id = getattr(args, "source_id", None)
    return own_backups(catalog, None if source_id else source_identity(settings), source_id)


def print_table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def selected_databases(args, settings: BackupSettings) -> list[SourceDatabase]:
    """``--database NAME`` when given, else every configured database."""
    return [settings.database(args.database)] if args.database else list(settings.databases)


def one_database(args, settings: BackupSettings) -> BackupSettings:
    """The settings of the database a command must act on alone; with several configured, ``--database`` is required."""
    return settings.for_database(settings.database(args.database))


def dump_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    print()


def keyed_by_database(values: dict[str, object]):
    """JSON for one database is its value as such; for several, an object keyed by database name."""
    return next(iter(values.values())) if len(values) == 1 else values


def catalog_rows(settings: BackupSettings) -> list[dict]:
    remote = Rclone(remote_config(settings.remote_conn_id))
    catalog = Catalog.load(remote, BackupLayout(settings.prefix))
    for problem in catalog.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if catalog.missing_root:
        raise RemoteRootMissing(catalog.missing_root_warning())
    return [
        {
            "id": m.id, "kind": m.kind, "database": m.database, "source": m.source.key if m.source else None,
            "started_at": m.to_dict()["started_at"], "finished_at": m.to_dict()["finished_at"],
            "bytes": m.artifact.bytes, "sha256": m.artifact.sha256, "parent": m.parent_id,
            "path": m.artifact.path, "verified": m.verified,
        }
        for m in catalog.backups
    ]


def cmd_list(args, settings: BackupSettings) -> int:
    databases = selected_databases(args, settings)
    if args.json:
        dump_json(keyed_by_database({db.name: catalog_rows(settings.for_database(db)) for db in databases}))
        return 0
    for db in databases:
        if len(databases) > 1:
            print(f"\n== {db.name} (connection {db.conn_id}) ==")
        list_one(settings.for_database(db))
    return 0


def list_one(settings: BackupSettings) -> None:
    remote = Rclone(remote_config(settings.remote_conn_id))
    catalog = Catalog.load(remote, BackupLayout(settings.prefix))
    for problem in catalog.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if catalog.missing_root:
        raise RemoteRootMissing(catalog.missing_root_warning())
    if not catalog.backups:
        print(f"No backups under {remote.remote.spec(settings.prefix)}")
        return
    rows = [
        [m.id, m.kind, m.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"), human_bytes(m.artifact.bytes),
         m.artifact.sha256[:12], m.parent_id or "-", m.artifact.path]
        for m in catalog.backups
    ]
    headers = ["ID", "KIND", "STARTED", "SIZE", "SHA256", "PARENT", "PATH"]
    groups = catalog.source_groups()
    if len(groups) > 1:  # several installations write here: say whose each backup is
        owner = {m.id: key for key, members in groups.items() for m in members}
        rows = [[*row, owner[m.id]] for row, m in zip(rows, catalog.backups)]
        headers.append("SOURCE")
        print(f"warning: backups of {len(groups)} sources are stored here: {catalog.describe_sources(groups)}", file=sys.stderr)
    print_table(rows, headers)


def local_time(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def airflow_history():
    """Airflow's run history when its metadata database is reachable from here, else None."""
    for key, value in airflow_env().items():
        os.environ.setdefault(key, value)
    level = logging.getLogger().level
    try:
        from pgbackup_airflow import history
    except Exception as exc:  # Airflow absent or not configured: status still works from the remote
        log.info("Airflow history unavailable: %s", exc)
        return None
    finally:
        # Importing Airflow points the root logger at stdout; keep stdout for our (--json) output.
        logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    return history


def airflow_next_run():
    """The DAGs' own next-run computation when Airflow is installed here, else croniter's estimate."""
    try:
        from pgbackup_airflow.timetables import next_run as from_timetable
    except Exception as exc:
        log.info("Airflow's timetables unavailable (%s): next runs estimated with croniter", exc)
        return next_run
    return from_timetable


def status_report(settings: BackupSettings, runs, paused, args, next_run_of=next_run) -> dict:
    """One database's status (``settings`` narrowed to it), with its redundant remotes compared to the primary."""
    remote = Rclone(remote_config(settings.remote_conn_id), logger=log)
    source_id = getattr(args, "source_id", None)
    report = collect_status(remote, settings, runs=runs, paused=paused, identity=None if source_id else source_identity(settings),
                            source_id=source_id, next_run_of=next_run_of)
    newest = report["backups"][0]["id"] if report["backups"] else None
    extra = {conn_id: Rclone(remote_config(conn_id), logger=log) for conn_id in settings.remote_conn_ids[1:]}
    report["other_remotes"], lagging = other_remotes(extra, BackupLayout(settings.prefix), newest)
    report["warnings"] += lagging
    return report


def cmd_status(args, settings: BackupSettings) -> int:
    history = airflow_history()
    runs = paused = None
    stalled = []
    if history is not None:
        try:
            runs, paused = history.last_outcomes(), history.paused()
            stalled = history.stalled_tasks()
        except Exception as exc:
            log.info("Airflow metadata database not readable: %s", exc)
    databases = selected_databases(args, settings)
    next_run_of = airflow_next_run() if history is not None else next_run
    reports = {db.name: status_report(settings.for_database(db), runs, paused, args, next_run_of) for db in databases}
    # The DAG warnings (paused, ...) are the same in every report: say them once.
    warnings = list(dict.fromkeys(
        w if len(reports) == 1 or w.startswith("DAG ") else f"{name}: {w}" for name, report in reports.items() for w in report["warnings"]
    ))
    warnings += [f"DAG {r.dag_id}: task {r.task_id}{f' [{r.database}]' if r.database else ''} of run {r.run_id} is {r.shown_state}: "
                 "its process probably died; Airflow marks it failed only when a scheduler is running" for r in stalled]
    for report in reports.values():
        report["warnings"] = report["warnings"] + [w for w in warnings if w.startswith("DAG ") and w not in report["warnings"]]
    if args.json:
        dump_json(keyed_by_database(reports) if len(reports) == 1 else {"databases": reports, "warnings": warnings})
        return 2 if warnings else 0
    for name, report in reports.items():
        print_database_status(name if len(reports) > 1 else None, report)
    report = next(iter(reports.values()))
    dag_rows = [[dag_id, f"{d['schedule']} ({d['timezone']})", local_time(d["next_run"]), local_time(d["last_success"]),
                 local_time(d["last_failure"]), {True: "yes", False: "no", None: "?"}[d["paused"]]]
                for dag_id, d in report["dags"].items()]
    print_table(dag_rows, ["DAG", "SCHEDULE", "NEXT RUN", "LAST SUCCESS", "LAST FAILURE", "PAUSED"])
    if not report["airflow"]:
        print("(Airflow's metadata database is not reachable from here: last runs unknown)")
    if warnings:
        print("\nWARNINGS")
        for warning in warnings:
            print(f"  ! {warning}")
        return 2
    print("\nNo warnings.")
    return 0


def print_database_status(name: str | None, report: dict) -> None:
    heading = f"Database {name}: backups" if name else "Backups"
    print(f"{heading} at {report['remote']}   (now {local_time(report['now'])})\n")
    rows = [[b["id"], b["kind"], local_time(b["started_at"]), human_bytes(b["bytes"]), "yes" if b["verified"] else "NO", b["parent"] or "-"]
            for b in report["backups"]]
    if rows:
        print_table(rows, ["RECENT BACKUPS", "KIND", "STARTED", "SIZE", "VERIFIED", "PARENT"])
    else:
        print("No backups yet.")
    st = report["storage"]
    print(f"\nStorage: full {st['full']['count']} × = {human_bytes(st['full']['bytes'])}, "
          f"incremental {st['incremental']['count']} × = {human_bytes(st['incremental']['bytes'])}, "
          f"orphans {st['orphans']['count']} = {human_bytes(st['orphans']['bytes'])}; total {human_bytes(st['total_bytes'])}")
    if st["quota"] and "total" in st["quota"]:
        q = st["quota"]
        print(f"Remote quota: {human_bytes(q.get('used', 0))} used of {human_bytes(q['total'])}, {human_bytes(q.get('free', 0))} free")
    print("\n".join(growth_lines(report["growth"], human_bytes)))
    for other in report["other_remotes"]:
        if "error" not in other:
            print(f"Also on remote {other['remote']}: {other['count']} backups, {human_bytes(other['bytes'])}, newest {other['newest'] or '-'}")
    if report["local"]:
        loc = report["local"]
        print(f"Local copies: {human_bytes(loc['backup_bytes'])} in {loc['dir']} ({loc['free_fraction']:.0%} of the disk free)")
    drill = report["drill"]
    print("Last restore drill: " + (
        "none yet" if not drill else
        f"{'passed' if drill['ok'] else 'FAILED'} {local_time(drill['at'])}, {drill['point']}, restore took {drill['seconds']}s"
    ))
    print()


BACKUP_DAGS = ("pg_full_backup", "pg_incremental_backup", "pg_restore_drill", "pg_backup_staleness")


def cmd_logs(args, settings: BackupSettings) -> int:
    """Recent task runs: from the REST API when an api-server is configured, else from the metadata database."""
    database = settings.database(args.database).name if args.database else None
    api = AirflowApi.from_env()
    if api is not None:
        log.info("Task history from the Airflow REST API at %s", api.url)
        records = api.task_history([args.dag] if args.dag else BACKUP_DAGS, limit=args.n, failed_only=args.failed, database=database)
    else:
        history = airflow_history()
        if history is None:
            print(f"backupctl: error: Airflow is not reachable from here: set {URL_VARIABLE} (and its credentials) "
                  "for a deployment's api-server, or AIRFLOW_HOME for a local one", file=sys.stderr)
            return 1
        records = history.task_history(limit=args.n, dag_id=args.dag, failed_only=args.failed, database=database)
    if args.json:
        json.dump([{**dataclasses.asdict(r), "seconds": r.seconds, "shown_state": r.shown_state} for r in records], sys.stdout,
                  indent=2, default=str)
        print()
        return 0
    if not records:
        print("No task runs recorded.")
        return 0
    rows = [[r.start.astimezone().strftime("%Y-%m-%d %H:%M:%S") if r.start else "-", r.dag_id, r.task_id, r.database or "-",
             r.shown_state or "-", f"{r.seconds:.1f}s" if r.seconds is not None else "-", r.error or ""] for r in records]
    print_table(rows, ["STARTED", "DAG", "TASK", "DATABASE", "STATE", "TOOK", "ERROR"])
    return 0


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


def airflow_env() -> dict[str, str]:
    """Environment for Airflow commands: run from a checkout, its dags/ and plugins/ unless the caller set others.

    Installed as a package (the image), the library is not beside the DAG files:
    Airflow's own configuration says where they are.
    """
    env = dict(os.environ)
    if (PROJECT_DIR / "dags").is_dir():
        env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_DIR / "dags"))
        env.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(PROJECT_DIR / "plugins"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    return env


def airflow_binary() -> str:
    beside = Path(sys.executable).with_name("airflow")
    found = str(beside) if beside.exists() else shutil.which("airflow")
    if not found:
        raise FileNotFoundError("the airflow command is not installed here; run `make venv` or use the project's venv")
    return found


# A task's exception as Airflow logs it: "airflow.sdk.exceptions.AirflowFailException: <message>".
_EXCEPTION_LINE = re.compile(r"^\s*[\w.]+(?:Error|Exception)\w*: (.+)$")


def run_dag_now(dag_id: str, verbose: bool, conf: dict | None = None) -> bool:
    """Run a DAG now: through the scheduler when an api-server is configured, else in-process (``airflow dags test``)."""
    api = AirflowApi.from_env()
    if api is not None:
        return run_dag_through_api(api, dag_id, conf)
    print(f"No Airflow api-server configured ({URL_VARIABLE}): running {dag_id} in-process with `airflow dags test`")
    return run_dag_in_process(dag_id, verbose, json.dumps(conf) if conf else None)


def run_dag_through_api(api: AirflowApi, dag_id: str, conf: dict | None) -> bool:
    """Trigger a manual run through the REST API and follow its tasks until it ends."""
    run = api.trigger(dag_id, conf)
    run_id = run["dag_run_id"]
    print(f"Triggered {dag_id} run {run_id} through the Airflow REST API at {api.url}; the scheduler runs it", flush=True)
    outcome = api.wait(dag_id, run_id, progress=lambda line: print(line, flush=True))
    if outcome.state == "success":
        print(f"{dag_id} run {run_id} succeeded in {outcome.seconds:.0f}s")
        return True
    print(f"backupctl: {dag_id} run {run_id} {outcome.state}", file=sys.stderr)
    for ti in api.task_instances(dag_id, run_id, state="failed"):
        label = ti["task_id"] + (f"[{ti.get('rendered_map_index') or ti['map_index']}]" if ti["map_index"] >= 0 else "")
        print(f"  {label}: {api.error_line(ti) or 'failed (no error line in its log)'}", file=sys.stderr)
    print(f"Its logs: backupctl logs --dag {dag_id} --failed, or the run in Airflow's UI", file=sys.stderr)
    return False


def run_dag_in_process(dag_id: str, verbose: bool, conf: str | None = None) -> bool:
    """Run a DAG in-process with ``airflow dags test``; its (long) output goes to a log file unless ``verbose``."""
    env = airflow_env()
    argv = [airflow_binary(), "dags", "test", dag_id, *(["--conf", conf] if conf else [])]
    if verbose:
        return subprocess.call(argv, env=env) == 0
    log_dir = Path(env.get("AIRFLOW_HOME", Path.home() / "airflow")) / "logs" / "backupctl"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{dag_id}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.log"
    print(f"Running {dag_id} through Airflow (full output: {log_file}) ...", flush=True)
    started = time.monotonic()
    with open(log_file, "w") as out:
        code = subprocess.call(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    if code == 0:
        print(f"{dag_id} succeeded in {time.monotonic() - started:.0f}s")
        return True
    lines = log_file.read_text(errors="replace").splitlines()
    errors = [line for line in lines if "Error" in line or "error" in line or "failed" in line][-15:]
    causes = [m.group(1) for m in map(_EXCEPTION_LINE.match, lines) if m]
    if causes:  # the exception that failed the task, worded for the operator, before the noise around it
        print(f"backupctl: {dag_id} failed: {causes[-1]}", file=sys.stderr)
    print(f"backupctl: {dag_id} failed (exit code {code}). Last error lines:", file=sys.stderr)
    for line in errors or lines[-15:]:
        print(f"  {line}", file=sys.stderr)
    print(f"Full output: {log_file}", file=sys.stderr)
    return False


def cmd_backup(args, settings: BackupSettings) -> int:
    """``full`` and ``incremental``: run the DAG now, then show the backup it committed."""
    dag_id = "pg_full_backup" if args.command == "full" else "pg_incremental_backup"
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
        for step, seconds in report.steps.items():
            print(f"  {step:<48} {seconds:7.1f}s")
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


def cmd_verify(args, settings: BackupSettings) -> int:
    """Check every stored object against its manifest, or (``--drill``) run the restore drill through Airflow."""
    if args.drill:
        if args.backup and len(settings.databases) > 1 and not args.database:
            raise SettingsError(f"--backup with several databases ({settings.database_names()}): add --database")
        conf = {"backup_id": args.backup, "database": args.database and settings.database(args.database).name}
        conf = {k: v for k, v in conf.items() if v}
        return 0 if run_dag_now("pg_restore_drill", args.verbose, conf=conf or None) else 1
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

    command("full", help=f"take a full backup now (a pg_full_backup run: through the scheduler when {URL_VARIABLE} is set)").set_defaults(func=cmd_backup)
    command("incremental", help="take an incremental backup now (a pg_incremental_backup run, as for full)").set_defaults(func=cmd_backup)
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
    p.add_argument("--drill", action="store_true", help="run the restore drill (pg_restore_drill) through Airflow")
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
    except (*OPERATOR_ERRORS, RestoreError, ValueError) as exc:
        print(f"backupctl: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # python -m backupctl.cli (bin/backupctl on a Python the project is not installed in)
    sys.exit(main())
