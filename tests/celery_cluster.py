"""A real Airflow deployment with the CeleryExecutor on this machine, for tests.

In a throwaway ``AIRFLOW_HOME``: a fresh metadata database on the local PostgreSQL
(Celery cannot use SQLite), a Redis database of its own on 127.0.0.1:6379 as the broker,
Celery's result backend in the metadata database, then ``airflow db migrate`` and, each in
its own process group with its log in the home folder: ``api-server`` (REST and Task
Execution API), ``scheduler``, ``dag-processor`` and two ``celery worker``\\ s.  Every
component gets the same secrets and ``AIRFLOW__CORE__EXECUTION_API_SERVER_URL``, as a
real multi-host deployment must.  Each worker records its own name as the hostname of
the task instances it runs (``worker_identity.hostname``), so a test can tell which
worker ran which task.

``stop()`` (or leaving the ``with`` block) ends every process group, drops the metadata
database and flushes the Redis database, whatever happened before.  Errors raised here,
and :meth:`CeleryCluster.diagnostics` for a test's own assertions, carry the end of the
component logs and of the logs of tasks that did not succeed.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from pathlib import Path

import psycopg2

from airflow_api_server import AirflowProcess, ApiServer, log_tail
from conftest import PG_SERVER_URL, admin_connection, airflow_cli
from worker_identity import HOSTNAME_VARIABLE

TESTS_DIR = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
# Marks a Redis database as taken by one cluster, so that two test runs on one machine
# (or another user of the server) never share a broker database.
REDIS_CLAIM_KEY = "pgbackup-test-celery-cluster"
ADMIN = "admin"
FINISHED = {"success", "failed"}


class ClusterError(RuntimeError):
    """The cluster did not come up or did not answer; the message holds the logs that say why."""


class CeleryCluster:
    def __init__(self, workdir: Path, env: dict[str, str] | None = None, *,
                 workers: tuple[str, ...] = ("worker-a", "worker-b"), concurrency: int = 2) -> None:
        """``env``: added to every component's environment (connections, ``BACKUP_*`` settings)."""
        self.workdir = Path(workdir)
        self.home = self.workdir / "airflow-home"
        self.logs = self.workdir / "component-logs"
        self.extra_env = dict(env or {})
        self.worker_names = workers
        self.concurrency = concurrency
        self.metadata_db = f"pgb_airflow_{uuid.uuid4().hex[:12]}"
        self.redis = None
        self.redis_db: int | None = None
        self.api: ApiServer | None = None
        self.components: list[AirflowProcess] = []
        self.env: dict[str, str] = {}
        self._admin_password = secrets.token_urlsafe(16)
        self._created_db = False

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> CeleryCluster:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.stop()
        except ClusterError as error:
            if exc is None:
                raise
            # the test's own failure is the one to see
            warnings.warn(f"cleaning up the Celery cluster: {error}", stacklevel=2)

    def start(self, timeout: float = 240) -> None:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._create_metadata_db()
        self._claim_redis_db()
        env = self._common_env()
        self.api = ApiServer(self.logs, {ADMIN: ("admin", self._admin_password)}, apps="all", base_env=env,
                             env={"AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
                                  "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(64)})
        # Every component gets the api-server's environment: the same secrets (the scheduler signs
        # the task tokens the api-server checks), the same base URL and the Execution API's address.
        self.api.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{self.api.url}/execution/"
        self.env = self.api.env

        migrate_log = self.logs / "db-migrate.log"
        with migrate_log.open("wb") as log:
            try:
                result = subprocess.run([airflow_cli(), "db", "migrate"], env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=300)
            except subprocess.TimeoutExpired:
                raise ClusterError(f"airflow db migrate did not finish in 300 s:\n{log_tail(migrate_log)}") from None
        if result.returncode != 0:
            raise ClusterError(f"airflow db migrate exited with {result.returncode}:\n{log_tail(migrate_log)}")
        self._create_backup_pool()

        self.components = [self.api.component]
        self.components.append(self._process("scheduler", ["scheduler"]))
        self.components.append(self._process("dag-processor", ["dag-processor"]))
        for name in self.worker_names:
            # No log server: every component shares this AIRFLOW_HOME, so the api-server reads task
            # logs from its files (two servers on one machine would also fight over port 8793).
            self.components.append(self._process(
                name, ["celery", "worker", "--celery-hostname", name, "--concurrency", str(self.concurrency), "--skip-serve-logs"],
                {HOSTNAME_VARIABLE: name},
            ))
        for component in self.components:
            component.start()

        deadline = time.monotonic() + timeout
        waiting = {"api-server": self.api.ready, "scheduler": self._scheduler_ready,
                   **{name: self._worker_ready(name) for name in self.worker_names}}
        while waiting:
            for component in self.components:
                component.check_running()
            for name, ready in list(waiting.items()):
                if ready():
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                raise ClusterError(f"not up after {timeout:.0f} s: {', '.join(waiting)}\n{self.diagnostics()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop every component (workers first), drop the metadata database, flush the Redis database."""
        errors = []
        for component in self.components:  # all at once: each stops in parallel with the others
            component.terminate()
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{component.name}: {exc!r}")
        self.components = []
        if self.redis is not None:
            try:
                self.redis.flushdb()
                self.redis.close()
            except Exception as exc:
                errors.append(f"redis db {self.redis_db}: {exc!r}")
            self.redis = None
        if self._created_db:
            try:
                conn = admin_connection()
                with conn.cursor() as cur:
                    cur.execute(f'DROP DATABASE IF EXISTS "{self.metadata_db}" WITH (FORCE)')
                conn.close()
                self._created_db = False
            except Exception as exc:
                errors.append(f"metadata database {self.metadata_db}: {exc!r}")
        if errors:
            raise ClusterError("; ".join(errors))

    # ------------------------------------------------------------------ setup pieces
    def _create_metadata_db(self) -> None:
        conn = admin_connection()
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.metadata_db}"')
        conn.close()
        self._created_db = True

    def _claim_redis_db(self) -> None:
        import redis

        probe = redis.Redis.from_url(f"{REDIS_URL}/0")
        try:
            count = int(probe.config_get("databases").get("databases", 16))
        except redis.RedisError:
            count = 16
        finally:
            probe.close()
        claim = f"{os.getpid()}:{self.metadata_db}"
        # Database 0 is the one everything else uses by default: leave it alone.
        for db in random.sample(range(1, count), count - 1):
            client = redis.Redis.from_url(f"{REDIS_URL}/{db}")
            if client.set(REDIS_CLAIM_KEY, claim, nx=True, ex=6 * 3600):
                if client.dbsize() == 1:
                    self.redis, self.redis_db = client, db
                    return
                client.delete(REDIS_CLAIM_KEY)  # someone else's data is in there
            client.close()
        raise ClusterError(f"no free Redis database on {REDIS_URL} (databases 1..{count - 1} are all in use)")

    def _metadata_url(self, scheme: str) -> str:
        """The metadata database's URL: the test server's address, no password (libpq reads PGPASSWORD)."""
        rest = PG_SERVER_URL.split("://", 1)[1].rstrip("/")
        return f"{scheme}://{rest}/{self.metadata_db}"

    def _common_env(self) -> dict[str, str]:
        # worker_identity (the hostname callable) must be importable by every component: a folder
        # holding only it, so that the rest of tests/ stays out of Airflow's processes.
        importable = self.workdir / "pythonpath"
        importable.mkdir(exist_ok=True)
        (importable / "worker_identity.py").symlink_to(TESTS_DIR / "worker_identity.py")
        pythonpath = os.pathsep.join(p for p in (str(importable), os.environ.get("PYTHONPATH", "")) if p)
        return {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self._metadata_url("postgresql+psycopg2"),
            "AIRFLOW__CELERY__BROKER_URL": f"{REDIS_URL}/{self.redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": self._metadata_url("db+postgresql"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_identity.hostname",
            # Only the runs a test triggers: unpausing a DAG with catchup=False would also start its
            # latest scheduled run at once.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            # The scheduler and the other components are told apart from the workers in the job table.
            HOSTNAME_VARIABLE: "control-plane",
            "PYTHONPATH": pythonpath,
            **self.extra_env,
        }

    def _create_backup_pool(self) -> None:
        """The pool the captures take a slot of (``BACKUP_POOL``, ``BACKUP_POOL_SLOTS``), as docker compose's airflow-init makes it."""
        name, slots = self.env.get("BACKUP_POOL") or "pgbackup", self.env.get("BACKUP_POOL_SLOTS") or "2"
        result = subprocess.run([airflow_cli(), "pools", "set", name, slots, "pg_dumps at once"], env=self.env,
                                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        if result.returncode != 0:
            raise ClusterError(f"airflow pools set {name} {slots} exited with {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")

    def _process(self, name: str, args: list[str], env: dict[str, str] | None = None) -> AirflowProcess:
        return AirflowProcess(name, args, {**self.env, **(env or {})}, self.logs / f"{name}.log")

    def shell_beside_workers(self, command: str, timeout: float = 120) -> dict[str, subprocess.CompletedProcess]:
        """Run a shell command once per worker, all at once, each in that worker's environment with
        ``HOSTNAME`` set to the worker's name (as in its container); worker name → result."""
        path = os.pathsep.join((str(Path(airflow_cli()).parent), self.env.get("PATH", os.defpath)))
        running = {
            name: subprocess.Popen(["bash", "-c", command], env={**self.env, HOSTNAME_VARIABLE: name, "HOSTNAME": name, "PATH": path},
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
            for name in self.worker_names
        }
        results = {}
        for name, process in running.items():
            try:
                output, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                output, _ = process.communicate()
            results[name] = subprocess.CompletedProcess(command, process.returncode, output)
        return results

    # ------------------------------------------------------------------ readiness
    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = psycopg2.connect(f"{PG_SERVER_URL}/{self.metadata_db}")
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        except psycopg2.errors.UndefinedTable:
            return []
        finally:
            conn.close()

    def _scheduler_ready(self) -> bool:
        return bool(self._query(
            "SELECT 1 FROM job WHERE job_type = 'SchedulerJob' AND state = 'running'"
            " AND latest_heartbeat > now() - interval '60 seconds'"
        ))

    def _worker_ready(self, name: str):
        component = next(c for c in self.components if c.name == name)
        marker = f"celery@{name} ready.".encode()

        def ready() -> bool:
            return component.log_path.exists() and marker in component.log_path.read_bytes()

        return ready

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Until the dag-processor has parsed and stored ``dag_id``."""
        deadline = time.monotonic() + timeout
        while not self._query("SELECT 1 FROM serialized_dag WHERE dag_id = %s", (dag_id,)):
            for component in self.components:
                component.check_running()
            if time.monotonic() > deadline:
                errors = self._query("SELECT relative_fileloc, stacktrace FROM import_error")
                raise ClusterError(f"DAG {dag_id} not parsed after {timeout:.0f} s; import errors: {errors}\n{self.diagnostics()}")
            time.sleep(0.5)

    # ------------------------------------------------------------------ REST API
    def request(self, method: str, path: str, body: dict | None = None):
        return self.api.request_as(ADMIN, self._admin_password, method, path, body, error=ClusterError)

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """Unpause ``dag_id`` and start a run of it now; returns the run id."""
        quoted = urllib.parse.quote(dag_id, safe="")
        self.request("PATCH", f"/api/v2/dags/{quoted}", {"is_paused": False})
        run = self.request("POST", f"/api/v2/dags/{quoted}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        """Until the run has finished; its state.  Raises with the diagnostics when it takes longer."""
        path = f"/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
        deadline = time.monotonic() + timeout
        while True:
            state = self.request("GET", path)["state"]
            if state in FINISHED:
                return state
            for component in self.components:
                component.check_running()
            if time.monotonic() > deadline:
                raise ClusterError(f"run {run_id} of {dag_id} still {state} after {timeout:.0f} s\n{self.diagnostics(dag_id, run_id)}")
            time.sleep(1)

    def wait_for_new_run(self, dag_id: str, run_type: str, timeout: float = 180) -> dict:
        """Until the scheduler has created a run of ``dag_id`` of ``run_type`` (``asset_triggered``, ``scheduled``); that run."""
        path = f"/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns?limit=100"
        deadline = time.monotonic() + timeout
        while True:
            runs = [r for r in self.request("GET", path)["dag_runs"] if r["run_type"] == run_type]
            if runs:
                return runs[0]
            for component in self.components:
                component.check_running()
            if time.monotonic() > deadline:
                raise ClusterError(f"no run of {dag_id} after {timeout:.0f} s\n{self.diagnostics()}")
            time.sleep(1)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = (f"/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns/"
                f"{urllib.parse.quote(run_id, safe='')}/taskInstances?limit=1000")
        return self.request("GET", path)["task_instances"]

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self, dag_id: str | None = None, run_id: str | None = None, chars: int = 3000) -> str:
        """The end of every component's log and, for a run, of each task's log that did not succeed."""
        parts = []
        if dag_id and run_id:
            try:
                tis = self.task_instances(dag_id, run_id)
            except Exception as exc:
                tis = []
                parts.append(f"(task instances unavailable: {exc})")
            for ti in sorted(tis, key=lambda t: (t["task_id"], t["map_index"])):
                parts.append(f"task {ti['task_id']}[{ti['map_index']}]: {ti['state']} on {ti.get('hostname') or '-'}")
            for ti in tis:
                if ti["state"] != "success":
                    for path in self.task_log_paths(dag_id, run_id, ti["task_id"], ti["map_index"]):
                        parts.append(f"----- task log {path.relative_to(self.home)} -----\n{task_log_summary(path, chars)}")
        for path in sorted(self.logs.glob("*.log")):
            # the api-server logs every request, the harness's own polling included: keep the failed ones
            lines = [line for line in log_tail(path, 200_000).splitlines()
                     if not ("[http.access]" in line and re.search(r"status_code=[23]\d\d\b", line))]
            parts.append(f"----- {path.name} -----\n" + "\n".join(lines)[-chars:])
        return "\n".join(parts)

    def task_log_paths(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[Path]:
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            folder = folder / f"map_index={map_index}"
        return sorted(folder.glob("attempt=*.log")) if folder.is_dir() else []


def task_log_summary(path: Path, chars: int = 3000) -> str:
    """The end of a task's log, its JSON lines made readable: time, level, message, and the exception
    (type, message, innermost frames) that failed the task."""
    lines = []
    for raw in log_tail(path, 200_000).splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            lines.append(raw)
            continue
        if not isinstance(record, dict):
            lines.append(raw)
            continue
        lines.append(f"{str(record.get('timestamp', ''))[11:23]} {record.get('level', '')}: {record.get('event', '')}")
        for error in record.get("error_detail") or []:
            frames = " < ".join(f"{Path(f['filename']).name}:{f['lineno']} {f['name']}" for f in error.get("frames", [])[::-1][:4])
            lines.append(f"    {error.get('exc_type')}: {error.get('exc_value')}  [{frames}]")
    return "\n".join(lines)[-chars:]
