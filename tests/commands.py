"""The project's commands as tests run them: ``backupctl`` (bin/backupctl with this venv's Python, optionally
under faketime), ``airflow dags test``, and the task states a DAG run left in Airflow's metadata database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from conftest import PROJECT, airflow_cli


def backupctl(env: dict[str, str], *args: str, clock: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``backupctl ARGS`` in ``env``; with ``clock`` (faketime's "+10m", "-1d", ...) its clock is moved, this process only."""
    faked = ["faketime", "-f", clock] if clock else []
    extra = {"FAKETIME_DONT_FAKE_MONOTONIC": "1"} if clock else {}
    return subprocess.run([*faked, sys.executable, str(PROJECT / "bin" / "backupctl"), *args], env={**env, **extra},
                          capture_output=True, text=True, timeout=timeout)


def local_remote_env(remote_root: str | Path, tmp_path: Path, airflow_home: Path | None = None, **extra: str) -> dict[str, str]:
    """``backupctl``'s environment for a local-directory remote: this process's without its AIRFLOW_* and BACKUP_*
    settings, local copies under ``tmp_path/local``, and ``airflow_home`` (default: a folder that does not exist)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKUP_"))}
    env.update(
        AIRFLOW_CONN_BACKUP_REMOTE=json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": str(remote_root)}}),
        BACKUP_LOCAL_DIR=str(tmp_path / "local"),
        AIRFLOW_HOME=str(airflow_home or tmp_path / "no-airflow-here"),
        **extra,
    )
    return env


def dags_test(dag_id: str, env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``airflow dags test DAG_ID ARGS``: one run of the DAG in this process's AIRFLOW_HOME (env's)."""
    return subprocess.run([airflow_cli(), "dags", "test", dag_id, *args], env=env, capture_output=True, text=True, timeout=timeout)


@dataclass(frozen=True)
class TaskState:
    state: str | None
    try_number: int


def task_states(dag_id: str, started_after: datetime) -> dict[str, TaskState]:
    """The task instances of the one run of ``dag_id`` that started after ``started_after``, read from the
    metadata database of this process's AIRFLOW_HOME (the one ``airflow dags test`` wrote): task id (with
    ``[map index]`` for a mapped one) -> state and try number."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.start_date > started_after).all()
        assert len(runs) == 1, f"expected one run of {dag_id} after {started_after}, found {[r.run_id for r in runs]}"
        instances = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == runs[0].run_id).all()
        return {(ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): TaskState(ti.state and str(ti.state), ti.try_number)
                for ti in instances}
