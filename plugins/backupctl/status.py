"""``backupctl status``: each database's backups, storage, growth and last drill, each DAG's runs, and the warnings.

The remote catalog is the truth about backups; Airflow's history (last runs,
paused DAGs, stalled tasks, next runs by the DAGs' own timetables) is added when
its metadata database is readable here (:mod:`backupctl.airflow_history`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from backupctl.airflow_history import run_history
from backupctl.output import dump_json, keyed_by_database, local_time, print_table
from backupctl.targets import remote_config, selected_databases, source_identity
from pgbackup.config.settings import BackupSettings
from pgbackup.model.layout import BackupLayout
from pgbackup.report.growth import growth_lines
from pgbackup.report.humanize import human_bytes
from pgbackup.report.status import collect_status, next_run, other_remotes, schedules
from pgbackup.report.task_runs import stalled_warning
from rclone_provider.client import Rclone

log = logging.getLogger("backupctl")


def status_report(settings: BackupSettings, runs, paused, args, next_run_of=next_run, now: datetime | None = None) -> dict:
    """One database's status (``settings`` narrowed to it), with its redundant remotes compared to the primary."""
    remote = Rclone(remote_config(settings.remote_conn_id), logger=log)
    source_id = getattr(args, "source_id", None)
    report = collect_status(remote, settings, now=now, runs=runs, paused=paused, identity=None if source_id else source_identity(settings),
                            source_id=source_id, next_run_of=next_run_of)
    newest = report["backups"][0]["id"] if report["backups"] else None
    extra = {conn_id: Rclone(remote_config(conn_id), logger=log) for conn_id in settings.remote_conn_ids[1:]}
    report["other_remotes"], lagging = other_remotes(extra, BackupLayout(settings.prefix), newest)
    report["warnings"] += lagging
    return report


def cmd_status(args, settings: BackupSettings) -> int:
    now = datetime.now(timezone.utc)
    databases = selected_databases(args, settings)
    history = run_history(now, {(cron, settings.timezone) for cron in schedules(settings).values()})
    runs, paused, stalled = (history.runs, history.paused, history.stalled) if history else (None, None, [])
    next_run_of = history.next_run_of if history else next_run
    reports = {db.name: status_report(settings.for_database(db), runs, paused, args, next_run_of, now) for db in databases}
    # The DAG warnings (paused, ...) are the same in every report: say them once.
    warnings = list(dict.fromkeys(
        w if len(reports) == 1 or w.startswith("DAG ") else f"{name}: {w}" for name, report in reports.items() for w in report["warnings"]
    ))
    warnings += [stalled_warning(r) for r in stalled]
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
