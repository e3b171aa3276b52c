"""``make ui`` (bin/ui): Airflow on the demo's home, signed in with the password it prints, showing the
demo's runs (a ``backupctl full`` made in-process on that home, as ``make demo`` makes them)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from airflow_api_server import free_port
from conftest import PG_SERVER_URL, PROJECT, airflow_cli, seeded_shop

pytestmark = pytest.mark.airflow


def sign_in(url: str, password: str) -> str:
    request = urllib.request.Request(f"{url}/auth/token", data=json.dumps({"username": "admin", "password": password}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["access_token"]


def test_make_ui_serves_the_demos_runs_and_prints_how_to_sign_in(make_database, tmp_path):
    shop = seeded_shop(make_database, "uidemo")
    data = tmp_path / "demo data"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "BACKUP_"))}
    env.update(DEMO_DATA_DIR=str(data), DEMO_DB=shop.dbname, DEMO_PG_URL=PG_SERVER_URL, BACKUP_UI_PORT=str(free_port()),
               BACKUP_TASK_RETRIES="0")
    # the demo's run, on the demo's home and with its connections, as bin/demo makes it
    demo_env = {**env, "AIRFLOW_HOME": str(data / "airflow"), "AIRFLOW_CONN_BACKUP_SOURCE": f"{PG_SERVER_URL}/{shop.dbname}",
                "AIRFLOW_CONN_BACKUP_REMOTE": json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": str(data / "remote")}}),
                "BACKUP_LOCAL_DIR": str(data / "local")}
    (data / "airflow").mkdir(parents=True)
    subprocess.run([airflow_cli(), "db", "migrate"], env=demo_env, check=True, capture_output=True)
    full = subprocess.run([sys.executable, str(PROJECT / "bin" / "backupctl"), "full"], env=demo_env, capture_output=True, text=True,
                          timeout=600)
    assert full.returncode == 0, full.stdout + full.stderr

    ui = subprocess.Popen([sys.executable, str(PROJECT / "bin" / "ui")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 240
        while not any(line.startswith("Sign in as admin") for line in lines):
            line = ui.stdout.readline()
            assert line or ui.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        said = "".join(lines)
        url = re.search(r"^Airflow UI: (http://127\.0\.0\.1:\d+)/", said, re.M).group(1)
        password = re.search(r"^Sign in as admin with password (\S+)  \(kept in (.+)\)$", said, re.M)
        assert json.loads((data / "airflow" / "ui-passwords.json").read_text()) == {"admin": password.group(1)}
        assert str(data / "airflow" / "ui-passwords.json") == password.group(2)

        token = sign_in(url, password.group(1))
        request = urllib.request.Request(f"{url}/api/v2/dags/pg_full_backup/dagRuns", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            runs = json.load(response)["dag_runs"]
        assert [r["state"] for r in runs] == ["success"], runs
    finally:
        os.killpg(ui.pid, signal.SIGINT)
        out, _ = ui.communicate(timeout=90)
    assert ui.returncode == 0 and "Airflow stopped." in out
