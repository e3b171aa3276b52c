"""Airflow's REST API as ``backupctl`` uses it: trigger a DAG run, follow it, read task history and logs.

Plain HTTP (``urllib``), no Airflow import: the CLI talks to a deployment's
api-server from wherever it runs, so runs go through the scheduler (its executor,
pools and ``max_active_runs``) and logs are read as Airflow serves them, JSON
lines and remote logging included.  Where to reach the api-server and how to sign
in come from the environment only, never from the command line:

- ``BACKUP_AIRFLOW_API_URL``: the api-server's base URL, e.g. ``http://airflow-apiserver:8080``;
- ``BACKUP_AIRFLOW_API_TOKEN``: a JWT to send as it is, or
- ``BACKUP_AIRFLOW_API_USER`` and ``BACKUP_AIRFLOW_API_PASSWORD``: exchanged for a JWT at ``/auth/token``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pgbackup.report.task_runs import TaskRun, parse_moment, task_label

URL_VARIABLE = "BACKUP_AIRFLOW_API_URL"
TOKEN_VARIABLE = "BACKUP_AIRFLOW_API_TOKEN"
USER_VARIABLE = "BACKUP_AIRFLOW_API_USER"
PASSWORD_VARIABLE = "BACKUP_AIRFLOW_API_PASSWORD"
FINISHED_RUN_STATES = frozenset({"success", "failed"})


class AirflowApiError(RuntimeError):
    """The api-server refused or could not be reached; the message says which request and why."""


@dataclass(frozen=True)
class RunOutcome:
    dag_id: str
    run_id: str
    run_type: str
    state: str
    seconds: float


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


class AirflowApi:
    """One api-server, signed in once per command."""

    def __init__(self, url: str, token: str, *, timeout: float = 60) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> AirflowApi | None:
        """The configured api-server, or None when ``BACKUP_AIRFLOW_API_URL`` is not set."""
        env = os.environ if env is None else env
        url = env.get(URL_VARIABLE, "").strip()
        if not url:
            return None
        token = env.get(TOKEN_VARIABLE)
        if not token:
            user, password = env.get(USER_VARIABLE), env.get(PASSWORD_VARIABLE)
            if not (user and password):
                raise AirflowApiError(f"{URL_VARIABLE} is set but neither {TOKEN_VARIABLE} nor {USER_VARIABLE} and "
                                      f"{PASSWORD_VARIABLE} are: the api-server needs one of them")
            token = cls._sign_in(url.rstrip("/"), user, password)
        return cls(url, token)

    @staticmethod
    def _sign_in(url: str, user: str, password: str) -> str:
        request = urllib.request.Request(f"{url}/auth/token", data=json.dumps({"username": user, "password": password}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)["access_token"]
        except urllib.error.HTTPError as error:
            raise AirflowApiError(f"signing in to {url} as {user!r} failed: HTTP {error.code} "
                                  f"(check {USER_VARIABLE} and {PASSWORD_VARIABLE})") from None
        except (urllib.error.URLError, OSError) as error:
            raise AirflowApiError(f"the Airflow api-server at {url} ({URL_VARIABLE}) cannot be reached: {error}") from None

    def request(self, method: str, path: str, body: dict | None = None, *, accept: str = "application/json"):
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json", "Accept": accept},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise AirflowApiError(f"{method} {path}: HTTP {error.code} {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            raise AirflowApiError(f"{method} {self.url}{path}: {error}") from None
        return json.loads(text) if text else None

    # -- runs ------------------------------------------------------------------------------
    def trigger(self, dag_id: str, conf: dict | None = None) -> dict:
        """Start a manual run now; refuses a paused DAG (its run would wait until someone unpauses it)."""
        dag = self.request("GET", f"/api/v2/dags/{_quote(dag_id)}")
        if dag.get("is_paused"):
            raise AirflowApiError(f"DAG {dag_id} is paused in Airflow at {self.url}: unpause it (UI or "
                                  f"`airflow dags unpause {dag_id}`) and run the command again")
        return self.request("POST", f"/api/v2/dags/{_quote(dag_id)}/dagRuns",
                            {"logical_date": None, "conf": conf or {}, "note": "Triggered by backupctl"})

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/api/v2/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}")

    def task_instances(self, dag_id: str, run_id: str = "~", *, limit: int = 100, state: str | None = None) -> list[dict]:
        query = {"limit": limit, "order_by": "-start_date"}
        if state:
            query["state"] = state
        path = f"/api/v2/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}/taskInstances?{urllib.parse.urlencode(query)}"
        return self.request("GET", path)["task_instances"]

    def wait(self, dag_id: str, run_id: str, progress: Callable[[str], None], *, poll: float = 2.0,
             timeout: float | None = None) -> RunOutcome:
        """Until the run has finished; each change of a task's state goes to ``progress`` as one line."""
        started = time.monotonic()
        seen: dict[tuple[str, int], str | None] = {}
        while True:
            run = self.run(dag_id, run_id)
            for ti in sorted(self.task_instances(dag_id, run_id), key=lambda t: (t.get("start_date") or "~", t["task_id"])):
                key = (ti["task_id"], ti["map_index"])
                if ti["state"] and seen.get(key) != ti["state"]:
                    seen[key] = ti["state"]
                    progress(f"  {task_label(ti['task_id'], ti['map_index'], ti.get('rendered_map_index'))}: {ti['state']}")
            if run["state"] in FINISHED_RUN_STATES:
                return RunOutcome(dag_id, run_id, run["run_type"], run["state"], time.monotonic() - started)
            if timeout is not None and time.monotonic() - started > timeout:
                raise AirflowApiError(f"run {run_id} of {dag_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(poll)

    # -- history and logs ------------------------------------------------------------------
    def task_history(self, dag_ids: Iterable[str], *, limit: int = 20, failed_only: bool = False,
                     database: str | None = None) -> list[TaskRun]:
        """The most recent task instances of ``dag_ids``, newest first, with the error line of each failure."""
        rows = []
        for dag_id in dag_ids:
            rows += self.task_instances(dag_id, limit=max(limit, 100) if database else limit, state="failed" if failed_only else None)
        if database:
            rows = [ti for ti in rows if ti.get("rendered_map_index") == database]
        rows.sort(key=lambda ti: ti.get("start_date") or "", reverse=True)
        return [
            TaskRun(ti["dag_id"], ti["task_id"], ti["dag_run_id"], ti["state"], parse_moment(ti.get("start_date")),
                    parse_moment(ti.get("end_date")), ti.get("try_number") or 0, ti["map_index"],
                    error=self.error_line(ti) if ti["state"] == "failed" else None,
                    database=ti.get("rendered_map_index") or (str(ti["map_index"]) if ti["map_index"] >= 0 else None))
            for ti in rows[:limit]
        ]

    def log_records(self, ti: dict) -> list:
        """A task try's log as Airflow serves it: structured records (dicts) or plain lines."""
        path = (f"/api/v2/dags/{_quote(ti['dag_id'])}/dagRuns/{_quote(ti['dag_run_id'])}/taskInstances/"
                f"{_quote(ti['task_id'])}/logs/{max(ti.get('try_number') or 1, 1)}?map_index={ti['map_index']}&full_content=true")
        content = self.request("GET", path).get("content") or []
        return content if isinstance(content, list) else str(content).splitlines()

    def error_line(self, ti: dict) -> str | None:
        """The exception that failed the task (its type and message), else its last error record."""
        try:
            records = self.log_records(ti)
        except AirflowApiError as exc:
            return f"(log unavailable: {exc})"
        causes, errors = [], []
        for record in records:
            if not isinstance(record, dict):
                continue
            details = record.get("error_detail") or []
            if details:  # the raised exception first, then its causes: the first is the one worded for the operator
                causes.append(f"{details[0].get('exc_type')}: {details[0].get('exc_value')}")
            if str(record.get("level", "")).lower() in ("error", "critical") and record.get("event"):
                errors.append(str(record["event"]))
        return (causes or errors or [None])[-1]
