"""``backupctl`` against a real deployment (tests/celery_cluster.py: api-server, scheduler, dag-processor,
a Celery worker): with ``BACKUP_AIRFLOW_API_*`` set, ``full`` and ``verify --drill`` trigger manual runs
through the REST API and follow them, and ``logs`` reads the scheduler-run tasks and their JSON logs there."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from celery_cluster import ADMIN, CeleryCluster
from conftest import PROJECT, backup_env

pytestmark = pytest.mark.airflow


def backupctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT / "bin" / "backupctl"), *args], env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture
def deployment(shop_db, local_remote, tmp_path):
    """The cluster backing up the sample shop to a local remote, and ``backupctl``'s environment for it."""
    env = backup_env(shop_db, {"type": "local", "root": local_remote.root}, tmp_path / "local copies")
    components = {k: v for k, v in env.items() if k.startswith(("AIRFLOW_CONN_", "BACKUP_"))}
    with CeleryCluster(tmp_path / "cluster", components, workers=("worker-a",), concurrency=2) as cluster:
        for dag_id in ("pg_full_backup", "pg_restore_drill"):
            cluster.wait_for_dag(dag_id)
            cluster.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        cli_env = {
            **env,
            "BACKUP_AIRFLOW_API_URL": cluster.api.url,
            "BACKUP_AIRFLOW_API_USER": ADMIN,
            "BACKUP_AIRFLOW_API_PASSWORD": cluster._admin_password,
            # no metadata database here: what backupctl learns of runs comes through the API
            "AIRFLOW_HOME": str(tmp_path / "no-airflow-here"),
        }
        yield cluster, cli_env


def test_full_runs_through_the_scheduler_and_logs_read_its_tasks(deployment):
    cluster, env = deployment
    full = backupctl(env, "full")
    assert full.returncode == 0, full.stdout + full.stderr + cluster.diagnostics()
    triggered = re.search(r"^Triggered pg_full_backup run (\S+) through the Airflow REST API at (\S+);", full.stdout, re.M)
    assert triggered and triggered.group(2) == cluster.api.url, full.stdout
    run_id = triggered.group(1)
    assert "airflow dags test" not in full.stdout
    assert re.search(r"^  backup\.dump_compress_checksum\[\S+\]: success$", full.stdout, re.M), full.stdout  # progress lines
    assert re.search(r"^Full backup \S+: .+, sha256 [0-9a-f]{64}$", full.stdout, re.M), full.stdout

    run = cluster.request("GET", f"/api/v2/dags/pg_full_backup/dagRuns/{run_id}")
    assert (run["run_type"], run["state"], run["note"]) == ("manual", "success", "Triggered by backupctl")

    listed = backupctl(env, "logs", "--dag", "pg_full_backup", "--json", "-n", "50")
    assert listed.returncode == 0, listed.stderr
    tasks = json.loads(listed.stdout)
    assert {t["run_id"] for t in tasks} == {run_id}
    assert {t["task_id"] for t in tasks} == {ti["task_id"] for ti in cluster.task_instances("pg_full_backup", run_id)}
    assert all(t["state"] == "success" for t in tasks)


def test_a_failed_drill_shows_its_error_line_from_the_json_task_log(deployment):
    cluster, env = deployment
    drill = backupctl(env, "verify", "--drill", "--backup", "full-19990101T000000Z")
    assert drill.returncode == 1, drill.stdout + drill.stderr
    assert "Triggered pg_restore_drill run" in drill.stdout
    assert "full-19990101T000000Z" in drill.stderr, drill.stderr  # the task's own error line, from its log

    failed = backupctl(env, "logs", "--failed", "--json")
    assert failed.returncode == 0, failed.stderr
    (task,) = json.loads(failed.stdout)
    assert task["dag_id"] == "pg_restore_drill" and task["state"] == "failed"
    assert "full-19990101T000000Z" in task["error"], task
    table = backupctl(env, "logs", "--failed")
    assert "pg_restore_drill" in table.stdout and "full-19990101T000000Z" in table.stdout, table.stdout
