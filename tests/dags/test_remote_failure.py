"""The network remote dies in the middle of an upload: the run fails after its retries, no manifest is written,
the partial object never shows as a backup, retention removes it later, and the next run succeeds."""

from datetime import datetime, timezone

import pytest

from commands import backupctl, dags_test, task_states
from conftest import backup_env
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from rclone_provider.client import Rclone, RemoteConfig
from waiting import InThread, wait_for

pytestmark = pytest.mark.airflow
LAYOUT = BackupLayout("database")


def served_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def test_remote_dying_mid_upload_loses_nothing_and_the_next_run_succeeds(airflow_home, shop_db, webdav_server, tmp_path):
    # --bwlimit keeps the ~0.5 MB upload running for seconds, so the server can die under it.
    extra = {"type": "webdav", "url": webdav_server.url, "root": "Backups", "flags": ["--bwlimit=100k", "--retries=1", "--low-level-retries=1"]}
    env = backup_env(shop_db, extra, tmp_path / "local", BACKUP_TASK_RETRIES="1", BACKUP_RETRY_DELAY="1s", BACKUP_ZSTD_LEVEL="1")
    served = webdav_server.directory / "Backups" / "database" / "full"

    before_first = datetime.now(timezone.utc)
    first_run = InThread(dags_test, "pg_full_backup", env)
    wait_for(lambda: served_bytes(served) >= 64 * 1024, "the upload to have written 64 KiB on the server", timeout=300)
    webdav_server.stop()
    first = first_run.outcome(timeout=600)
    output = first.stdout + first.stderr
    assert first.returncode != 0
    assert "RcloneError" in output and "connection refused" in output.lower()
    tasks = task_states("pg_full_backup", started_after=before_first)
    upload = [state for task, state in tasks.items() if task.startswith("backup.upload")]
    assert [(s.state, s.try_number) for s in upload] == [("failed", 2)], f"the upload failed after one retry: {tasks}"
    assert not [t for t, s in tasks.items() if t.startswith("backup.commit_manifest") and s.state == "success"]
    partial = [p for p in served.iterdir() if p.is_file()]
    assert partial and not list(served.glob("*.manifest.json")), "the dead upload left a partial object and no manifest"

    webdav_server.start()
    remote = Rclone(RemoteConfig.from_extra("backup_remote", extra))
    assert Catalog.load(remote, LAYOUT).backups == []

    second = dags_test("pg_full_backup", env)
    assert second.returncode == 0, second.stdout[-3000:]
    catalog = Catalog.load(remote, LAYOUT)
    assert len(catalog.backups) == 1 and catalog.problems == []
    left = {f"database/full/{p.name}" for p in partial}
    assert {o.path for o in catalog.orphans} == left, "the partial upload is an orphan, not a backup"
    assert catalog.backups[0].artifact.path not in left

    # two hours on (backupctl's clock only), the orphan is older than the grace an upload in progress is given
    retention = backupctl({**env, "BACKUP_ORPHAN_GRACE": "1h"}, "retention", clock="+2h")
    assert retention.returncode == 0, retention.stderr
    assert Catalog.load(remote, LAYOUT).orphans == []
    assert not [p for p in partial if p.exists()]
    assert len(Catalog.load(remote, LAYOUT).backups) == 1
