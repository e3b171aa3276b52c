"""The arrows of the layering, checked in a fresh interpreter: the CLI imports no Airflow until a command
needs it, and the rclone provider imports nothing of this project beside itself."""

import json
import subprocess
import sys

from conftest import PROJECT


def modules_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env={"PYTHONPATH": str(PROJECT / "plugins")},
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_the_cli_imports_no_airflow_at_module_level():
    loaded = modules_after("import backupctl.cli")
    assert not [m for m in loaded if m == "airflow" or m.startswith("airflow.")]


def test_the_provider_imports_nothing_of_the_project():
    loaded = modules_after("import rclone_provider.hooks.rclone, rclone_provider.operators.rclone, rclone_provider.get_provider_info")
    foreign = [m for m in loaded if m.split(".")[0] in ("pgbackup", "pgbackup_airflow", "child_process")]
    assert foreign == []
