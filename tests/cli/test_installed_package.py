"""``pip install`` of the project, as a user gets it (see ``installed_project``): the wheel built from
this tree gives Airflow the rclone provider and its connection form, and the user ``backupctl``."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import PROJECT
from installed_project import InstalledProject, install_project

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> InstalledProject:
    return install_project(tmp_path_factory.mktemp("installed"))


def run(installed: InstalledProject, *argv: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**installed.env, "AIRFLOW__CORE__TEST_CONNECTION": "Enabled", **(extra_env or {})}
    return subprocess.run([*argv], cwd=installed.workdir, env=env, capture_output=True, text=True, timeout=300)


def airflow(installed: InstalledProject, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(installed, installed.airflow, *args, **kwargs)


def test_the_code_comes_from_the_wheel_alone(installed):
    result = run(installed, str(installed.python), "-c",
                 "import pgbackup, pgbackup_airflow, rclone_provider; print(pgbackup.__file__, rclone_provider.__file__)")
    assert result.returncode == 0, result.stderr
    assert str(PROJECT) not in result.stdout and "/venv/lib/" in result.stdout


def test_airflow_lists_the_rclone_provider(installed):
    result = airflow(installed, "providers", "list", "--output", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    providers = {p["package_name"]: p for p in json.loads(result.stdout)}
    assert providers["pgbackup"]["version"] == "0.1.0"


def test_airflow_knows_the_rclone_connection_type_and_its_form(installed):
    result = airflow(installed, "providers", "hooks", "--output", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    hooks = {h["connection_type"]: h for h in json.loads(result.stdout)}
    assert hooks["rclone"]["class"] == "rclone_provider.hooks.rclone.RcloneHook"
    assert hooks["rclone"]["package_name"] == "pgbackup" and hooks["rclone"]["hook_name"] == "Rclone"
    widgets = airflow(installed, "providers", "widgets", "--output", "json")
    assert widgets.returncode == 0, widgets.stderr[-3000:]
    fields = {w["connection_parameter_name"] for w in json.loads(widgets.stdout) if w["class"].startswith("rclone_provider.")}
    assert fields == {"extra__rclone__type", "extra__rclone__root", "extra__rclone__options"}


def test_airflow_connections_test_lists_a_local_remote(installed, tmp_path):
    root = tmp_path / "remote root"
    root.mkdir()
    (root / "hello.txt").write_text("hi")
    connection = {"conn_type": "rclone", "extra": {"type": "local", "root": str(root)}}
    result = airflow(installed, "connections", "test", "my_remote",
                     extra_env={"AIRFLOW_CONN_MY_REMOTE": json.dumps(connection)})
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "Connection success!" in result.stdout


def test_airflow_connections_test_names_a_missing_root(installed, tmp_path):
    root = tmp_path / "no such folder"
    connection = {"conn_type": "rclone", "extra": {"type": "local", "root": str(root)}}
    result = airflow(installed, "connections", "test", "my_remote",
                     extra_env={"AIRFLOW_CONN_MY_REMOTE": json.dumps(connection)})
    said = " ".join(result.stdout.split())  # the CLI wraps long lines
    assert result.returncode != 0 and "Connection failed!" in said, result.stdout + result.stderr[-3000:]
    assert f"{root}: the root does not exist on this local remote; create it or correct 'root'" in said


def test_backupctl_console_script(installed):
    result = run(installed, str(installed.bin / "backupctl"), "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: backupctl" in result.stdout and "restore" in result.stdout
