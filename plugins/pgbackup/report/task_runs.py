"""Airflow task instances as ``backupctl logs`` and ``status`` report them: one record type, one way to word them.

Pure (no Airflow, no HTTP): the REST client (:mod:`backupctl.airflow_api`) and
the metadata-database reader (:mod:`pgbackup_airflow.history`) both build
:class:`TaskRun` records, and the CLI prints them, so what an operator reads is
the same whichever way the history came.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# A task's exception as Airflow logs it, e.g. "airflow.sdk.exceptions.AirflowFailException: <message>"
# (and our own typed errors: ...Busy, ...Missing, ...Invalid).
_ERROR_LINE = re.compile(r"^\s*([\w.]+(?:Error|Exception|Busy|Missing|Invalid)\w*): (.+)$")
_MOMENTS = ("start", "end", "heartbeat")


@dataclass(frozen=True)
class TaskRun:
    """One try of one task instance of a backup DAG."""

    dag_id: str
    task_id: str
    run_id: str
    state: str | None
    start: datetime | None
    end: datetime | None
    try_number: int
    map_index: int = -1
    error: str | None = None  # the exception that failed it (failed tries only)
    database: str | None = None  # a mapped instance's database (its rendered map index); None when not mapped
    heartbeat: datetime | None = None  # its last heartbeat (its start when it never sent one), where known
    stalled: bool = False  # running, but silent for longer than the heartbeat timeout: its process is probably gone

    @property
    def seconds(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.start and self.end else None

    @property
    def shown_state(self) -> str | None:
        if self.stalled and self.heartbeat is not None:
            return f"running, no heartbeat since {self.heartbeat:%Y-%m-%d %H:%M:%S %Z} (killed?)"
        return self.state

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601), with the derived ``seconds`` and ``shown_state``."""
        data = dataclasses.asdict(self)
        for name in _MOMENTS:
            data[name] = data[name].isoformat() if data[name] else None
        return {**data, "seconds": self.seconds, "shown_state": self.shown_state}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskRun:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        for name in _MOMENTS:
            values[name] = parse_moment(values.get(name))
        return cls(**values)


def parse_moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def task_label(task_id: str, map_index: int, rendered_map_index: str | None = None) -> str:
    """``backup.upload[shop]`` for a mapped instance (its rendered index, else its number), else the task id."""
    return task_id + (f"[{rendered_map_index or map_index}]" if map_index >= 0 else "")


def stalled_warning(run: TaskRun) -> str:
    """The status warning for a task whose process died without a scheduler to notice."""
    where = f" [{run.database}]" if run.database else ""
    return (f"DAG {run.dag_id}: task {run.task_id}{where} of run {run.run_id} is {run.shown_state}: "
            "its process probably died; Airflow marks it failed only when a scheduler is running")


def last_error_line(text: str) -> str | None:
    """The last exception line (``SomeError: message``) of a log, or None."""
    errors = [m.group(0).strip() for m in map(_ERROR_LINE.match, text.splitlines()) if m]
    return errors[-1] if errors else None


def exception_message(line: str) -> str | None:
    """The message of an exception line (what follows ``SomeError: ``), or None when ``line`` is not one."""
    match = _ERROR_LINE.match(line)
    return match.group(2) if match else None
