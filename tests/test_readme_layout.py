"""The README's "Project layout" section is the map of the tree: every package and module of the shipped code, and
every top-level folder of the checkout, is named there, and nothing it names under plugins/ is gone."""

from __future__ import annotations

import re

import pytest

from conftest import PROJECT

pytestmark = pytest.mark.unit

PLUGINS = PROJECT / "plugins"
SHIPPED = ("pgbackup", "backupctl", "pgbackup_airflow", "rclone_provider")


def layout_section() -> str:
    readme = (PROJECT / "README.md").read_text()
    section = readme.split("## Project layout", 1)[1]
    return section.split("```", 2)[1]


def words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))


def test_every_package_and_module_of_the_shipped_code_is_on_the_map():
    named = words(layout_section())
    missing = []
    for top in SHIPPED:
        for path in sorted((PLUGINS / top).rglob("*.py")):
            if path.name == "__init__.py":
                name = path.parent.name
            else:
                name = path.stem
            if name not in named:
                missing.append(str(path.relative_to(PROJECT)))
    assert missing == []


def test_every_top_level_folder_of_the_checkout_is_on_the_map():
    section = layout_section()
    ignored = {".git", ".venv", ".data", "data", ".pytest_cache", ".hypothesis", ".ruff_cache", ".mypy_cache"}
    folders = [p.name for p in PROJECT.iterdir() if p.is_dir() and p.name not in ignored and not p.name.endswith(".egg-info")]
    assert [f for f in folders if not re.search(rf"(^|\s){re.escape(f)}/", section, re.M)] == []


def test_the_library_packages_on_the_map_are_the_library_packages_in_the_tree():
    on_map = set(re.findall(r"^  (\w+)/\s", layout_section(), re.M))
    in_tree = {p.name for p in (PLUGINS / "pgbackup").iterdir() if (p / "__init__.py").is_file()}
    assert on_map == in_tree
