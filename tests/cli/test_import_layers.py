"""The arrows of the layering, checked in a fresh interpreter: the library (every module under plugins/pgbackup/)
imports no Airflow, no Airflow layer, no CLI and no sample data; its packages import only the packages below
them; the CLI imports neither Airflow nor the Airflow layer; the Backups page's view
model and chart need neither Airflow nor FastAPI; and the rclone provider imports nothing of this
project beside itself."""

import ast
import json
import subprocess
import sys

import pytest

from conftest import PROJECT

LIBRARY = PROJECT / "plugins" / "pgbackup"
# What the library must never load: Airflow, the layers above it, and the dev-only sample data.
ABOVE_THE_LIBRARY = ("airflow", "pgbackup_airflow", "backupctl", "sample_shop")

# The library's packages from the bottom up (as the imports stand today): a package may import the packages of
# a lower rank, never one of its own rank or above.  storage knows nothing of backups; model (manifest, layout,
# catalog) stands on the store; postgres and policy on the model; capture writes the formats restore reads;
# config builds settings from the environment out of capture's and policy's types; restore reads sources
# from config; report reads everything.
LAYERS = {"storage": 0, "model": 1, "postgres": 2, "policy": 2, "capture": 3, "config": 4, "restore": 5, "report": 6}


def modules_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    return json.loads(fresh_python(code))


def fresh_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env={"PYTHONPATH": str(PROJECT / "plugins")},
                            capture_output=True, text=True, check=True)
    return result.stdout


def library_modules() -> list[str]:
    """Every module of the library, walked with pkgutil (so a new module is checked without being listed)."""
    code = ("import json, pkgutil, pgbackup\n"
            "print(json.dumps(sorted(m.name for m in pkgutil.walk_packages(pgbackup.__path__, 'pgbackup.'))))")
    return json.loads(fresh_python(code))


def loaded_by_each(modules: list[str]) -> dict[str, list[str]]:
    """Import ``modules`` one after another in one fresh interpreter: what each import added to sys.modules."""
    code = ("import importlib, json, sys\n"
            f"added = {{}}\nfor name in {modules!r}:\n"
            "    before = set(sys.modules)\n"
            "    importlib.import_module(name)\n"
            "    added[name] = sorted(set(sys.modules) - before)\n"
            "print(json.dumps(added))")
    return json.loads(fresh_python(code))


def top(module: str) -> str:
    return module.split(".")[0]


def test_the_walk_finds_every_package_of_the_library():
    packages = {m.split(".")[1] for m in library_modules() if m.count(".") >= 1}
    assert packages == set(LAYERS), "a new package of the library needs its place in LAYERS"


def test_no_module_of_the_library_imports_airflow_the_airflow_layer_or_the_cli():
    modules = ["pgbackup", *library_modules()]
    pulled_in = {name: [m for m in added if top(m) in ABOVE_THE_LIBRARY] for name, added in loaded_by_each(modules).items()}
    assert {name: found for name, found in pulled_in.items() if found} == {}


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_a_library_package_loads_only_the_packages_below_it(package):
    """At run time: importing every module of ``package`` loads no library package of its rank or above."""
    own = [m for m in library_modules() if m == f"pgbackup.{package}" or m.startswith(f"pgbackup.{package}.")]
    loaded = {m.split(".")[1] for m in modules_after("\n".join(f"import {m}" for m in own)) if m.startswith("pgbackup.")}
    above = sorted(p for p in loaded - {package} if LAYERS[p] >= LAYERS[package])
    assert above == [], f"pgbackup.{package} (rank {LAYERS[package]}) loads {above}"


def test_no_import_statement_of_the_library_points_up():
    """Also the imports inside functions (which run only when called): each names a package below its own."""
    upward = []
    for path in sorted(LIBRARY.rglob("*.py")):
        relative = path.relative_to(LIBRARY)
        if len(relative.parts) < 2:
            continue  # pgbackup/__init__.py
        package = relative.parts[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                parts = name.split(".")
                if top(name) in ABOVE_THE_LIBRARY:
                    upward.append(f"{relative}:{node.lineno} imports {name}")
                elif parts[0] == "pgbackup" and len(parts) > 1 and parts[1] != package and LAYERS[parts[1]] >= LAYERS[package]:
                    upward.append(f"{relative}:{node.lineno} imports {name}")
    assert upward == []


def every_module_of(package: str) -> str:
    """An import statement for every module of ``package`` (files under plugins/, so a new module is checked too)."""
    plugins = PROJECT / "plugins"
    files = sorted((plugins / package).rglob("*.py"))
    names = [".".join(f.relative_to(plugins).with_suffix("").parts).removesuffix(".__init__") for f in files]
    return "\n".join(f"import {name}" for name in names)


def test_the_cli_imports_neither_airflow_nor_the_airflow_layer():
    loaded = modules_after(every_module_of("backupctl"))
    assert sorted({top(m) for m in loaded} & {"airflow", "pgbackup_airflow"}) == []


def test_the_backups_pages_view_model_and_chart_import_neither_airflow_nor_fastapi():
    loaded = modules_after("import pgbackup_airflow.ui_view, pgbackup_airflow.ui_chart")
    assert sorted({top(m) for m in loaded} & {"airflow", "fastapi", "starlette", "backupctl"}) == []


def test_the_store_catalog_and_retention_type_against_the_stores_own_stored_object():
    loaded = modules_after("import pgbackup.storage.store, pgbackup.model.catalog, pgbackup.policy.retention")
    assert "rclone_provider" not in {top(m) for m in loaded}


def test_the_provider_imports_nothing_of_the_project():
    loaded = modules_after("import rclone_provider.hooks.rclone, rclone_provider.operators.rclone, rclone_provider.get_provider_info")
    foreign = [m for m in loaded if m.split(".")[0] in ("pgbackup", "pgbackup_airflow", "child_process")]
    assert foreign == []
