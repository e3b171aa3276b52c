"""What Airflow remembers about the backup DAGs: runs, task instances and the error line of each failure.

Read straight from the metadata database (the CLI runs beside Airflow, not
inside a task), so ``backupctl status`` and ``logs`` work with the scheduler
stopped.  Task logs are read from ``$AIRFLOW_HOME/logs`` where the scheduler's
executors write them, and from ``logs/backupctl`` for runs ``backupctl`` made.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select

BACKUP_DAGS = ("pg_full_backup", "pg_incremental_backup", "pg_restore_drill", "pg_backup_staleness")
_ERROR_LINE = re.compile(r"^\s*([\w.]+(?:Error|Exception|Busy|Missing|Invalid)\w*): (.+)$")


@dataclass(frozen=True)
class TaskRecord:
    dag_id: str
    task_id: str
    run_id: str
    state: str | None
    start: datetime | None
    end: datetime | None
    try_number: int
    error: str | None
    database: str | None = None  # a mapped instance's database (its rendered map index); None when not mapped

    @property
    def seconds(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.start and self.end else None


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


def task_history(limit: int = 20, dag_id: str | None = None, failed_only: bool = False, database: str | None = None) -> list[TaskRecord]:
    """The most recent task instances of the backup DAGs, newest first, with the error line of failures."""
    query = select(TaskInstance).where(TaskInstance.dag_id.in_([dag_id] if dag_id else BACKUP_DAGS))
    if database:
        query = query.where(TaskInstance.rendered_map_index == database)
    if failed_only:
        query = query.where(TaskInstance.state == "failed")  # not upstream_failed: the cause, not its echoes
    query = query.order_by(TaskInstance.start_date.desc().nulls_last()).limit(limit)
    with create_session() as session:
        rows = session.execute(query).scalars().all()
        records = [
            TaskRecord(ti.dag_id, ti.task_id, ti.run_id, ti.state, ti.start_date, ti.end_date, ti.try_number,
                       error_line(ti.dag_id, ti.run_id, ti.task_id, ti.try_number, ti.map_index) if ti.state == "failed" else None,
                       database=ti.rendered_map_index or (str(ti.map_index) if ti.map_index >= 0 else None))
            for ti in rows
        ]
    return records


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
        errors = [m.group(0).strip() for m in map(_ERROR_LINE.match, text.splitlines()) if m]
        if errors:
            return errors[-1]
    return None
