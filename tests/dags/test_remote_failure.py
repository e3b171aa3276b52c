"""The network remote dies in the middle of an upload: the run fails after its retries, no manifest is written,
the partial object never shows as a backup, retention removes it later, and the next run succeeds."""

import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import airflow_cli, backup_env
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from rclone_provider.client import Rclone, RemoteConfig

pytestmark = pytest.mark.airflow
LAYOUT = BackupLayout("database")


def test_remote_dying_mid_upload_loses_nothing_and_the_next_run_succeeds(airflow_home, shop_db, webdav_server, tmp_path):
    # --bwlimit keeps the ~0.5 MB upload running for seconds, so the server can die under it.
    extra = {"type": "webdav", "url": webdav_server.url, "root": "Backups", "flags": ["--bwlimit=100k", "--retries=1", "--low-level-retries=1"]}
    env = backup_env(shop_db, extra, tmp_path / "local", BACKUP_TASK_RETRIES="1", BACKUP_RETRY_DELAY="1s", BACKUP_ZSTD_LEVEL="1")
    served = webdav_server.directory / "Backups" / "database" / "full"

    def kill_when_upload_starts():
        for _ in range(1200):
            if served.exists() and any(served.iterdir()):
                break
            time.sleep(0.05)
        time.sleep(1)
        webdav_server.stop()

    killer = threading.Thread(target=kill_when_upload_starts)
    killer.start()
    first = subprocess.run([airflow_cli(), "dags", "test", "pg_full_backup"], env=env, capture_output=True, text=True, timeout=600)
    killer.join()
    output = first.stdout + first.stderr
    assert first.returncode != 0
    assert "RcloneError" in output and "connection refused" in output.lower()
    assert output.count("[DAG TEST] end task task_id=backup.upload") >= 2, "the upload was retried"
    assert not list(served.glob("*.manifest.json"))

    webdav_server.start()
    remote = Rclone(RemoteConfig.from_extra("backup_remote", extra))
    assert Catalog.load(remote, LAYOUT).backups == []

    second = subprocess.run([airflow_cli(), "dags", "test", "pg_full_backup"], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:]
    catalog = Catalog.load(remote, LAYOUT)
    assert len(catalog.backups) == 1 and catalog.problems == []
    for orphan in catalog.orphans:  # what the dead upload left, if anything: no manifest, so not a backup
        assert orphan.path.endswith(".dump.zst") and catalog.backups[0].artifact.path != orphan.path
    time.sleep(2)
    env["BACKUP_ORPHAN_GRACE"] = "1s"
    project = Path(__file__).resolve().parents[2]
    retention = subprocess.run([str(Path(airflow_cli()).with_name("python")), str(project / "bin" / "backupctl"), "retention"],
                               env=env, capture_output=True, text=True, cwd=project)
    assert retention.returncode == 0, retention.stderr
    assert Catalog.load(remote, LAYOUT).orphans == []
