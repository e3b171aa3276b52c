"""What Airflow remembers of the backup DAGs (last outcomes, paused flags, task runs), as the CLI reads it.

Two sources, one answer type (:class:`pgbackup.report.task_runs.TaskRun`):

- the REST API (:class:`backupctl.airflow_api.AirflowApi`) when an api-server is
  configured: a deployment's history and its JSON task logs, from anywhere;
- else the Airflow installation beside the CLI: a child process of its Python
  runs :func:`pgbackup_airflow.history.print_history` against the metadata
  database and prints JSON.  Airflow's own ``airflow tasks states-for-dag-run -o
  json`` does not report heartbeats, tries or rendered map indexes, which
  ``status`` needs to tell a killed task from a running one and ``logs`` to name
  the database.

The CLI never imports Airflow: a missing or unconfigured Airflow is an
unavailable history (None), and ``status`` still reports the remote's truth.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime

from backupctl.airflow_api import AirflowApi
from backupctl.airflow_run import airflow_env
from pgbackup.config.dag_ids import BACKUP_DAGS
from pgbackup.report.status import next_run
from pgbackup.report.task_runs import TaskRun, last_error_line, parse_moment

log = logging.getLogger("backupctl")
_PROBE = "from pgbackup_airflow.history import print_history; print_history()"


class HistoryUnavailable(RuntimeError):
    """Airflow's metadata database cannot be read from here."""


@dataclass(frozen=True)
class RunHistory:
    """What ``status`` shows of Airflow: per DAG the last success and failure, whether it is paused, and stalled tasks."""

    runs: dict[str, dict[str, datetime | None]] | None  # None: the metadata database is not readable
    paused: dict[str, bool | None] | None
    stalled: list[TaskRun] = field(default_factory=list)
    next_runs: dict[tuple[str, str], datetime | None] = field(default_factory=dict)  # (cron, tz) -> by the DAGs' own timetable

    def next_run_of(self, cron: str, tz: str, now: datetime) -> datetime:
        """The timetable's answer for a schedule asked about, else croniter's estimate."""
        return self.next_runs.get((cron, tz)) or next_run(cron, tz, now)


def ask_metadata_database(request: dict) -> dict:
    """Run the Airflow layer's history reader in a child process of this Python and return its JSON answer."""
    result = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(request)], env=airflow_env(), capture_output=True,
                            text=True, stdin=subprocess.DEVNULL)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        cause = last_error_line(result.stderr) or (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise HistoryUnavailable(f"Airflow's metadata database not readable: {cause}")
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise HistoryUnavailable(f"Airflow's history reader printed no JSON: {lines[-1][:200]}") from None


def run_history(now: datetime, schedules: set[tuple[str, str]]) -> RunHistory | None:
    """The last outcomes, paused flags, stalled tasks and next runs (of ``schedules``, after ``now``) from the Airflow
    installation here, or None when there is none (runs and paused None when only its metadata database is not readable)."""
    try:
        answer = ask_metadata_database({"what": "status", "now": now.isoformat(), "schedules": sorted(schedules)})
    except HistoryUnavailable as exc:
        log.info("%s", exc)
        return None
    if answer.get("error"):
        log.info("Airflow metadata database not readable: %s", answer["error"])
    runs = answer["runs"] and {dag_id: {state: parse_moment(at) for state, at in outcome.items()} for dag_id, outcome in answer["runs"].items()}
    next_runs = {(cron, tz): parse_moment(at) for cron, tz, at in answer["next_runs"]}
    return RunHistory(runs=runs, paused=answer["paused"], stalled=[TaskRun.from_dict(r) for r in answer["stalled"]], next_runs=next_runs)


def task_history(*, limit: int, dag_id: str | None, failed_only: bool, database: str | None) -> list[TaskRun]:
    """The most recent task runs of the backup DAGs, newest first: through the REST API when configured, else the metadata database.

    Raises :class:`HistoryUnavailable` when neither can be read.
    """
    api = AirflowApi.from_env()
    if api is not None:
        log.info("Task history from the Airflow REST API at %s", api.url)
        return api.task_history([dag_id] if dag_id else BACKUP_DAGS, limit=limit, failed_only=failed_only, database=database)
    answer = ask_metadata_database({"what": "tasks", "limit": limit, "dag_id": dag_id, "failed_only": failed_only, "database": database})
    return [TaskRun.from_dict(r) for r in answer["tasks"]]
