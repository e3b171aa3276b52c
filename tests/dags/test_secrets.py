"""No secret on a command line, in a log, in a manifest or in an error: full + incremental + restore with a
distinctive database password and remote option, while the process table is sampled."""

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import PROJECT, backup_env
from sample_shop import mutate_sample_shop

pytestmark = pytest.mark.airflow
DB_PASSWORD = "Db-Secret-5d2f8e"
REMOTE_SECRET = "Remote-Token-a9c41b"


class CommandLineWatcher:
    """Reads every process's argv from /proc until stopped, as `ps` would show them."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    self.seen.add(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    pass
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_secrets_never_leak_through_a_whole_backup_and_restore_cycle(airflow_home, shop_db, local_remote, tmp_path, make_database):
    env = backup_env(shop_db, {"type": "local", "root": local_remote.root, "description": REMOTE_SECRET}, tmp_path / "local", password=DB_PASSWORD)
    backupctl = [sys.executable, str(PROJECT / "bin" / "backupctl")]
    outputs = []
    with CommandLineWatcher() as watcher:
        for command in (["full"], ["incremental"]):
            result = subprocess.run([*backupctl, "-v", *command], env=env, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
            outputs += [result.stdout, result.stderr]
            conn = shop_db.connect()
            mutate_sample_shop(conn, 0.01, 31)
            conn.close()
        target = make_database("secret_restore")
        restore = subprocess.run([*backupctl, "restore", "--to", f"postgresql://postgres@127.0.0.1:5432/{target.dbname}"],
                                 env={**env, "PGPASSWORD": DB_PASSWORD}, capture_output=True, text=True, timeout=600)
        assert restore.returncode == 0, restore.stderr[-2000:]
        outputs += [restore.stdout, restore.stderr]
    assert any("pg_dump" in c for c in watcher.seen) and any("rclone" in c for c in watcher.seen), "the watcher saw the tools run"
    places = {
        "command lines": "\n".join(watcher.seen),
        "command output": "\n".join(outputs),
        "Airflow logs": "".join(p.read_text(errors="replace") for p in (airflow_home / "logs").rglob("*") if p.is_file()),
        "manifests": "".join(p.read_text() for root in (Path(local_remote.root), tmp_path / "local") for p in root.rglob("*.manifest.json")),
    }
    for where, text in places.items():
        assert DB_PASSWORD not in text, f"database password found in {where}"
        assert REMOTE_SECRET not in text, f"remote secret found in {where}"
