"""Running a backup DAG now: through the scheduler (REST API) when an api-server is configured, else in-process.

With ``BACKUP_AIRFLOW_API_URL`` set the run is triggered through the REST API and
followed task by task, so the scheduler runs it like any other (its executor,
pools, ``max_active_runs``).  Without one (the embedded demo) ``airflow dags
test`` runs it in a child process.  Either way the CLI talks to Airflow only
across a process boundary: it never imports Airflow or the Airflow layer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from backupctl.airflow_api import URL_VARIABLE, AirflowApi
from pgbackup.report.task_runs import exception_message, task_label

# A checkout (bin/backupctl, make venv) holds dags/ beside plugins/; an installed package does not.
_CHECKOUT = Path(__file__).resolve().parents[2]


def airflow_env() -> dict[str, str]:
    """Environment for Airflow commands: run from a checkout, its dags/ and plugins/ unless the caller set others.

    Installed as a package (the image), the library is not beside the DAG files:
    Airflow's own configuration says where they are.
    """
    env = dict(os.environ)
    if (_CHECKOUT / "dags").is_dir() and (_CHECKOUT / "plugins" / "backupctl").is_dir():
        env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(_CHECKOUT / "dags"))
        env.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(_CHECKOUT / "plugins"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    return env


def airflow_binary() -> str:
    beside = Path(sys.executable).with_name("airflow")
    found = str(beside) if beside.exists() else shutil.which("airflow")
    if not found:
        raise FileNotFoundError("the airflow command is not installed here; run `make venv` or use the project's venv")
    return found


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
        label = task_label(ti["task_id"], ti["map_index"], ti.get("rendered_map_index"))
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
    causes = [message for message in map(exception_message, lines) if message]
    if causes:  # the exception that failed the task, worded for the operator, before the noise around it
        print(f"backupctl: {dag_id} failed: {causes[-1]}", file=sys.stderr)
    print(f"backupctl: {dag_id} failed (exit code {code}). Last error lines:", file=sys.stderr)
    for line in errors or lines[-15:]:
        print(f"  {line}", file=sys.stderr)
    print(f"Full output: {log_file}", file=sys.stderr)
    return False
