"""What Airflow remembers about the backup DAGs: runs, task instances and the error line of each failure.

Read straight from the metadata database, so the Backups page, and ``backupctl
status`` and ``logs`` without an api-server, work with the scheduler stopped.
The CLI never imports this module: it runs :func:`print_history` in a child
process of the Airflow installation (:mod:`backupctl.airflow_history`) and reads
its JSON, as it runs ``airflow dags test``.

A task whose process was killed outright (SIGKILL, the OOM killer, a power
cut) cannot record its own end: the database keeps it ``running``, and only a
scheduler marks it failed, once its heartbeat is older than ``[scheduler]
task_instance_heartbeat_timeout``.  Without a scheduler nothing ever does, so a
``running`` task silent for longer than that timeout is reported as *stalled*
("running, no heartbeat since …") rather than as alive.  Task logs are read from ``$AIRFLOW_HOME/logs`` where the scheduler's
executors write them, and from ``logs/backupctl`` for runs ``backupctl`` made.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select

from pgbackup.config.dag_ids import BACKUP_DAGS
from pgbackup.report.task_runs import TaskRun, last_error_line


def heartbeat_timeout() -> timedelta:
    """Airflow's own limit for a silent task (``[scheduler] task_instance_heartbeat_timeout``)."""
    from airflow.configuration import conf

    return timedelta(seconds=conf.getint("scheduler", "task_instance_heartbeat_timeout", fallback=300))


def _stall(ti, now: datetime, timeout: timedelta) -> tuple[datetime | None, bool]:
    heard = ti.last_heartbeat_at or ti.start_date
    return heard, ti.state == "running" and heard is not None and now - heard > timeout


def last_outcomes(dag_ids=BACKUP_DAGS) -> dict[str, dict[str, datetime | None]]:
    """Per DAG: when its last successful and last failed run ended."""
    result = {}
    with create_session() as session:
        for dag_id in dag_ids:
            outcome = {}
            for state in ("success", "failed"):
                row = session.execute(
                    select(DagRun.end_date).where(DagRun.dag_id == dag_id, DagRun.state == state).order_by(DagRun.end_date.desc()).limit(1)
                ).first()
                outcome[state] = row[0] if row else None
            result[dag_id] = outcome
    return result


def paused(dag_ids=BACKUP_DAGS) -> dict[str, bool | None]:
    from airflow.models.dag import DagModel

    with create_session() as session:
        rows = dict(session.execute(select(DagModel.dag_id, DagModel.is_paused).where(DagModel.dag_id.in_(dag_ids))).all())
    return {dag_id: rows.get(dag_id) for dag_id in dag_ids}


def task_history(limit: int = 20, dag_id: str | None = None, failed_only: bool = False, database: str | None = None) -> list[TaskRun]:
    """The most recent task instances of the backup DAGs, newest first, with the error line of failures."""
    query = select(TaskInstance).where(TaskInstance.dag_id.in_([dag_id] if dag_id else BACKUP_DAGS))
    if database:
        query = query.where(TaskInstance.rendered_map_index == database)
    if failed_only:
        query = query.where(TaskInstance.state == "failed")  # not upstream_failed: the cause, not its echoes
    query = query.order_by(TaskInstance.start_date.desc().nulls_last()).limit(limit)
    now, timeout = datetime.now(timezone.utc), heartbeat_timeout()
    with create_session() as session:
        rows = session.execute(query).scalars().all()
        records = [
            TaskRun(ti.dag_id, ti.task_id, ti.run_id, ti.state, ti.start_date, ti.end_date, ti.try_number, ti.map_index,
                    error=error_line(ti.dag_id, ti.run_id, ti.task_id, ti.try_number, ti.map_index) if ti.state == "failed" else None,
                    database=ti.rendered_map_index or (str(ti.map_index) if ti.map_index >= 0 else None),
                    heartbeat=_stall(ti, now, timeout)[0], stalled=_stall(ti, now, timeout)[1])
            for ti in rows
        ]
    return records


def stalled_tasks(dag_ids=BACKUP_DAGS) -> list[TaskRun]:
    """Backup tasks the database says are running that have been silent past the heartbeat timeout."""
    running = [r for r in task_history(limit=50) if r.state == "running" and r.dag_id in dag_ids]
    return [r for r in running if r.stalled]


def missing_pool_warning(name: str, slots: int) -> str | None:
    """A warning when the captures' pool (``BACKUP_POOL``) does not exist: the scheduler never starts a task of a
    missing pool, so every backup would wait in state *scheduled* without failing or alerting."""
    from airflow.models.pool import Pool

    with create_session() as session:
        if session.scalar(select(Pool.id).where(Pool.pool == name)) is not None:
            return None
    return (f"Airflow pool {name!r} does not exist: no capture will ever start. "
            f"Create it: airflow pools set {name} {slots} 'pg_dumps at once'")


def _logs_dir() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "logs"


def error_line(dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str | None:
    """The last exception line in the task's log (scheduler runs) or in the backupctl log of that run."""
    task_dir = _logs_dir() / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        task_dir /= f"map_index={map_index}"
    task_log = task_dir / f"attempt={max(try_number, 1)}.log"
    candidates = [task_log] if task_log.is_file() else []
    backupctl_logs = _logs_dir() / "backupctl"
    if backupctl_logs.is_dir():
        candidates += sorted(backupctl_logs.glob(f"{dag_id}-*.log"), reverse=True)
    for path in candidates:
        text = path.read_text(errors="replace")
        if path != task_log and run_id not in text:
            continue
        error = last_error_line(text)
        if error:
            return error
    return None


def print_history(request: str | None = None) -> None:
    """What ``backupctl`` asks of the metadata database, printed as one JSON line (the last line of stdout).

    ``request`` (default ``sys.argv[1]``) is JSON: ``{"what": "status", "now": ISO,
    "schedules": [[cron, tz], ...]}`` for the last outcomes, paused flags, stalled
    tasks and each schedule's next run by the DAGs' own timetable, or ``{"what": "tasks", "limit":
    20, "dag_id": null, "failed_only": false, "database": null}`` for task history.
    """
    asked = json.loads(request if request is not None else sys.argv[1])
    if asked["what"] == "status":
        from pgbackup_airflow.timetables import next_run

        now = datetime.fromisoformat(asked["now"])
        # The timetables need no database: their answer stands even where the metadata database is not readable.
        answer = {"next_runs": [[cron, tz, next_run(cron, tz, now).isoformat()] for cron, tz in asked.get("schedules", [])]}
        try:
            outcomes = {dag_id: {state: at.isoformat() if at else None for state, at in outcome.items()}
                        for dag_id, outcome in last_outcomes().items()}
            answer |= {"runs": outcomes, "paused": paused(), "stalled": [r.to_dict() for r in stalled_tasks()]}
        except Exception as exc:  # no metadata database here (or not initialized): the runs are unknown, not an error
            answer |= {"runs": None, "paused": None, "stalled": [], "error": f"{type(exc).__name__}: {exc}"}
    else:
        records = task_history(limit=asked.get("limit", 20), dag_id=asked.get("dag_id"), failed_only=asked.get("failed_only", False),
                               database=asked.get("database"))
        answer = {"tasks": [r.to_dict() for r in records]}
    print("\n" + json.dumps(answer), flush=True)
