"""A running Airflow on loopback for the bench: api-server, scheduler and dag-processor, LocalExecutor.

The issue on Airflow-native runs makes "trigger a run on a scheduler that is already up" the
default path; its cost beside the library's own work is what ``airflow dags test`` (which
starts Airflow, parses the DAG and runs every task in one process) cannot show. This starts
the three components the way the tests do — ``harness/airflow_api_server.py``'s
``AirflowProcess`` (own process group, log file, stop that also ends the task processes) and
``ApiServer`` (SimpleAuthManager, a token from Airflow's own login endpoint) are imported,
not copied — on the bench's throwaway ``AIRFLOW_HOME`` with its SQLite metadata database
(LocalExecutor, as ``airflow standalone`` uses), then triggers runs through the REST API.

``airflow_api_server`` is the dev-only harness distribution (``harness/``, installed by ``make venv``).

The scheduler's own job schedule is off (``use_job_schedule``), so the only runs are the ones
the bench triggers: unpausing a DAG with catchup off would otherwise start its latest
scheduled run at once.
"""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import psutil

from airflow_api_server import AirflowProcess, ApiServer

ADMIN = "bench-admin"
FINISHED = {"success", "failed"}


class AirflowStartError(RuntimeError):
    """A component did not come up or a run did not finish; the message holds the end of the logs."""


class RunningAirflow:
    """``with RunningAirflow(env, workdir, logs) as airflow: airflow.run(dag_id)`` — components up for the block."""

    def __init__(self, env: dict[str, str], workdir: Path, logs: Path) -> None:
        """``env``: the whole environment of every component (AIRFLOW_HOME, connections, BACKUP_*);
        ``workdir``: a private folder for the login's password file and the component logs, which
        :meth:`stop` copies to ``logs``."""
        self.workdir, self.logs = workdir, logs
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._password = secrets.token_urlsafe(16)
        self.api = ApiServer(self.workdir, {ADMIN: ("admin", self._password)}, apps="all", base_env={
            **env,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(64),
        })
        # The scheduler signs the task tokens the api-server checks: every component gets its environment.
        self.api.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{self.api.url}/execution/"
        self.database = Path(env["AIRFLOW_HOME"]) / "airflow.db"
        self.components = [self.api.component] + [
            AirflowProcess(name, [name], self.api.env, self.workdir / f"{name}.log") for name in ("scheduler", "dag-processor")
        ]

    def __enter__(self) -> RunningAirflow:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, dag_id: str = "pg_full_backup", timeout: float = 300) -> None:
        """Create the captures' pool, start the three and wait until the API answers, the scheduler heartbeats and ``dag_id`` is parsed.

        Without the pool (``BACKUP_POOL``, as docker compose's airflow-init creates it) the
        scheduler never starts a capture: the run would wait in *scheduled* until its timeout.
        """
        self._create_backup_pool()
        for component in self.components:
            component.start()
        deadline = time.monotonic() + timeout
        waiting = {"api-server": self.api.ready, "scheduler": self._scheduler_ready, f"DAG {dag_id}": lambda: self._parsed(dag_id)}
        while waiting:
            for component in self.components:
                component.check_running()
            waiting = {name: ready for name, ready in waiting.items() if not ready()}
            if waiting and time.monotonic() > deadline:
                raise AirflowStartError(f"not up after {timeout:.0f} s: {', '.join(waiting)}\n{self.log_tails()}")
            time.sleep(0.5)

    def _create_backup_pool(self) -> None:
        env = self.api.env
        name, slots = env.get("BACKUP_POOL") or "pgbackup", env.get("BACKUP_POOL_SLOTS") or "2"
        airflow = str(Path(sys.executable).with_name("airflow"))
        result = subprocess.run([airflow, "pools", "set", name, slots, "pg_dumps at once"], env=env, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=300)
        if result.returncode != 0:
            raise AirflowStartError(f"airflow pools set {name} {slots} exited with {result.returncode}:\n{result.stderr[-2000:]}")

    def stop(self) -> None:
        for component in self.components:
            component.terminate()
        for component in reversed(self.components):
            component.stop()
        self.logs.mkdir(parents=True, exist_ok=True)
        for log in self.workdir.glob("*.log"):
            shutil.copyfile(log, self.logs / log.name)

    def cpu_s(self) -> float:
        """User + system CPU so far of every component's process tree: each live process's own and that
        of the children it has reaped (task processes, pg_dump, rclone), so a difference of two readings
        counts a process that ended in between through its parent."""
        total = 0.0
        for component in self.components:
            try:
                root = psutil.Process(component.process.pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for process in tree:
                try:
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                total += times.user + times.system + times.children_user + times.children_system
        return total

    def run(self, dag_id: str, timeout: float = 1800) -> dict:
        """Trigger a run now and wait for it: its wall time from the trigger, its state and each task's duration."""
        quoted = urllib.parse.quote(dag_id, safe="")
        self.request("PATCH", f"/api/v2/dags/{quoted}", {"is_paused": False})
        started = time.perf_counter()
        run_id = self.request("POST", f"/api/v2/dags/{quoted}/dagRuns", {"logical_date": None, "conf": {}})["dag_run_id"]
        path = f"/api/v2/dags/{quoted}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
        deadline = time.monotonic() + timeout
        # Polled: the REST API has no way to wait for a run; 0.2 s is the resolution of the wall time.
        while (state := self.request("GET", path)["state"]) not in FINISHED:
            for component in self.components:
                component.check_running()
            if time.monotonic() > deadline:
                raise AirflowStartError(f"run {run_id} still {state} after {timeout:.0f} s\n{self.log_tails()}")
            time.sleep(0.2)
        wall = time.perf_counter() - started
        tasks = self.request("GET", f"{path}/taskInstances?limit=1000")["task_instances"]
        if state != "success":
            failed = sorted(t["task_id"] for t in tasks if t["state"] != "success")
            raise AirflowStartError(f"run {run_id} of {dag_id} ended {state}; tasks not successful: {failed}\n{self.log_tails()}")
        durations: dict[str, float] = {}  # per task id, the mapped instances of one task summed
        for task in tasks:
            durations[task["task_id"]] = durations.get(task["task_id"], 0.0) + (task.get("duration") or 0.0)
        return {"wall_s": wall, "tasks_s": durations, "run_id": run_id}

    def request(self, method: str, path: str, body: dict | None = None):
        return self.api.request_as(ADMIN, self._password, method, path, body, error=AirflowStartError)

    def log_tails(self, chars: int = 3000) -> str:
        return "\n".join(f"----- {c.name} -----\n{c.log_tail(chars)}" for c in self.components)

    def _query(self, statement: str, params: tuple = ()) -> list[tuple]:
        if not self.database.exists():
            return []
        conn = sqlite3.connect(self.database, timeout=10)
        try:
            return conn.execute(statement, params).fetchall()
        except sqlite3.OperationalError:  # a table not created yet
            return []
        finally:
            conn.close()

    def _scheduler_ready(self) -> bool:
        return bool(self._query("SELECT 1 FROM job WHERE job_type = 'SchedulerJob' AND state = 'running' "
                                "AND latest_heartbeat > datetime('now', '-60 seconds')"))

    def _parsed(self, dag_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", (dag_id,)))
