"""The arrows of the layering, checked in a fresh interpreter: the library imports neither Airflow nor the CLI, the CLI
imports neither Airflow nor the Airflow layer, the Backups page's view model and chart need neither Airflow nor
FastAPI, and the rclone provider imports nothing of this project beside itself."""

import json
import subprocess
import sys

from conftest import PROJECT

PLUGINS = PROJECT / "plugins"


def modules_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env={"PYTHONPATH": str(PLUGINS)},
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def every_module_of(package: str) -> str:
    """An import statement for every module of ``package`` (files under plugins/, so a new module is checked too)."""
    files = sorted((PLUGINS / package).rglob("*.py"))
    names = [".".join(f.relative_to(PLUGINS).with_suffix("").parts).removesuffix(".__init__") for f in files]
    return "\n".join(f"import {name}" for name in names)


def top_level(modules: list[str], *names: str) -> list[str]:
    return sorted({m.split(".")[0] for m in modules if m.split(".")[0] in names})


def test_the_library_imports_neither_airflow_nor_the_cli_nor_the_airflow_layer():
    loaded = modules_after(every_module_of("pgbackup"))
    assert top_level(loaded, "airflow", "backupctl", "pgbackup_airflow", "fastapi") == []


def test_the_cli_imports_neither_airflow_nor_the_airflow_layer():
    loaded = modules_after(every_module_of("backupctl"))
    assert top_level(loaded, "airflow", "pgbackup_airflow") == []


def test_the_backups_pages_view_model_and_chart_import_neither_airflow_nor_fastapi():
    loaded = modules_after("import pgbackup_airflow.ui_view, pgbackup_airflow.ui_chart")
    assert top_level(loaded, "airflow", "fastapi", "starlette", "backupctl") == []


def test_the_store_catalog_and_retention_type_against_the_stores_own_stored_object():
    loaded = modules_after("import pgbackup.storage.store, pgbackup.model.catalog, pgbackup.policy.retention")
    assert top_level(loaded, "rclone_provider") == []


def test_the_provider_imports_nothing_of_the_project():
    loaded = modules_after("import rclone_provider.hooks.rclone, rclone_provider.operators.rclone, rclone_provider.get_provider_info")
    foreign = [m for m in loaded if m.split(".")[0] in ("pgbackup", "pgbackup_airflow", "child_process")]
    assert foreign == []
