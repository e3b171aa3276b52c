"""``backupctl``: the operator's command line.

It needs no running scheduler: ``list`` and ``retention`` talk to the remote
directly; ``full`` runs the DAG in-process with ``airflow dags test`` so that
the run is recorded in Airflow like a scheduled one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from pgbackup.catalog import Catalog
from pgbackup.connections import ConnectionMissing, remote_from_env
from pgbackup.layout import BackupLayout
from pgbackup.manifest import ManifestError
from pgbackup.postgres import SourceError, ToolVersionError
from pgbackup.retention import apply_plan, plan_retention
from pgbackup.settings import PROJECT_DIR, BackupSettings, SettingsError
from pgbackup.store import LocalStore
from rclone_provider.client import Rclone, RcloneError, RemoteConfig, RemoteConfigError

log = logging.getLogger("backupctl")
OPERATOR_ERRORS = (
    ConnectionMissing, SettingsError, RemoteConfigError, RcloneError, ManifestError, SourceError, ToolVersionError, LookupError,
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


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def print_table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def cmd_list(args, settings: BackupSettings) -> int:
    remote = Rclone(remote_config(settings.remote_conn_id))
    catalog = Catalog.load(remote, BackupLayout(settings.prefix))
    for problem in catalog.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if args.json:
        json.dump(
            [
                {
                    "id": m.id, "kind": m.kind, "database": m.database,
                    "started_at": m.to_dict()["started_at"], "finished_at": m.to_dict()["finished_at"],
                    "bytes": m.artifact.bytes, "sha256": m.artifact.sha256, "parent": m.parent_id,
                    "path": m.artifact.path, "verified": m.verified,
                }
                for m in catalog.backups
            ],
            sys.stdout,
            indent=2,
        )
        print()
        return 0
    if not catalog.backups:
        print(f"No backups under {remote.remote.spec(settings.prefix)}")
        return 0
    rows = [
        [m.id, m.kind, m.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"), human_bytes(m.artifact.bytes),
         m.artifact.sha256[:12], m.parent_id or "-", m.artifact.path]
        for m in catalog.backups
    ]
    print_table(rows, ["ID", "KIND", "STARTED", "SIZE", "SHA256", "PARENT", "PATH"])
    return 0


def cmd_retention(args, settings: BackupSettings) -> int:
    layout = BackupLayout(settings.prefix)
    now = datetime.now(timezone.utc)
    targets = [
        ("remote", Rclone(remote_config(settings.remote_conn_id), logger=log), settings.remote_policy()),
        ("local", LocalStore(settings.local_dir), settings.local_policy()),
    ]
    for name, store, policy in targets:
        catalog = Catalog.load(store, layout)
        plan = plan_retention(catalog.backups, policy, now, orphans=catalog.orphans)
        print(f"== {name} copies ({len(plan.decisions)} backups, {len(plan.to_delete)} to delete{', dry run' if args.dry_run else ''})")
        for d in plan.decisions:
            print(f"  {'keep  ' if d.keep else 'DELETE'} {d.backup_id:<32} {d.reason}")
        for path in plan.orphans_to_delete:
            print(f"  DELETE orphan {path}")
        apply_plan(plan, catalog.backups, store, layout, log, dry_run=args.dry_run)
    return 0


def airflow_env() -> dict[str, str]:
    """Environment for Airflow commands: this project's dags/ and plugins/ unless the caller set others."""
    env = dict(os.environ)
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


def run_dag_now(dag_id: str, verbose: bool) -> bool:
    """Run a DAG in-process with ``airflow dags test``; its (long) output goes to a log file unless ``verbose``."""
    env = airflow_env()
    argv = [airflow_binary(), "dags", "test", dag_id]
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
    print(f"backupctl: {dag_id} failed (exit code {code}). Last error lines:", file=sys.stderr)
    for line in errors or lines[-15:]:
        print(f"  {line}", file=sys.stderr)
    print(f"Full output: {log_file}", file=sys.stderr)
    return False


def cmd_full(args, settings: BackupSettings) -> int:
    if not run_dag_now("pg_full_backup", args.verbose):
        return 1
    remote = Rclone(remote_config(settings.remote_conn_id))
    latest = Catalog.load(remote, BackupLayout(settings.prefix)).latest_full()
    if latest is None:
        print("backupctl: the run succeeded but no full backup is in the catalog", file=sys.stderr)
        return 1
    print(f"Full backup {latest.id}: {human_bytes(latest.artifact.bytes)}, sha256 {latest.artifact.sha256}")
    print(f"  stored at {remote.remote.spec(latest.artifact.path)}")
    print(f"  manifest  {remote.remote.spec(BackupLayout(settings.prefix).manifest_path('full', latest.id))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backupctl", description="PostgreSQL backups run by Airflow, stored with rclone.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show rclone's and the library's log lines")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("full", help="take a full backup now (runs the pg_full_backup DAG through Airflow)").set_defaults(func=cmd_full)
    p = sub.add_parser("list", help="list the backups in the remote catalog")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("retention", help="apply the retention policies to the remote and local copies")
    p.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    p.set_defaults(func=cmd_retention)
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
