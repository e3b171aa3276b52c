"""A first deploy, task by task: the full DAG's chain and the incremental DAG's chain start together on an empty database.

The incremental's capture reads the remote's catalog first, then takes the capture lock; wherever that falls in the
full's chain — before it, while the full holds the lock, between the full's upload and its manifest, after its commit —
both chains must land: the incremental promoted to a full while no full is committed, an incremental on the full once
one is, and no task fails (a failure alerts).  The operators run as their tasks do, on a real PostgreSQL and rclone.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import admin_connection
from pgbackup.config.settings import BackupSettings
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from pgbackup.postgres.snapshot import CAPTURE_LOCK_KEY
from pgbackup_airflow.operators import CaptureBackupOperator, CheckArchiveOperator, CommitManifestOperator, RetentionOperator
from rclone_provider.client import Rclone
from rclone_provider.operators.rclone import RcloneUploadOperator, RcloneVerifyOperator

pytestmark = pytest.mark.integration
LAYOUT = BackupLayout("database")
REMOTE = "backup_remote"


class Chain:
    """One backup DAG's tasks for one run, executed as the task runner would, one step at a time."""

    def __init__(self, kind: str, local_dir: str) -> None:
        self.kind, self.local_dir = kind, local_dir
        self.captured: dict | None = None
        self.verified: dict | None = None

    def capture(self) -> dict:
        operator = CaptureBackupOperator(task_id=f"capture_{self.kind}", kind=self.kind, rclone_conn_id=REMOTE, local_dir=self.local_dir)
        self.captured = operator.execute({})
        return self.captured

    def store(self) -> None:
        """check_archive → upload → verify: the object is on the remote, its manifest not yet."""
        c = self.captured
        CheckArchiveOperator(task_id=f"check_{self.kind}", captured=c).execute({})
        RcloneUploadOperator(task_id=f"upload_{self.kind}", local_path=c["path"], remote_path=c["object_path"], rclone_conn_id=REMOTE).execute({})
        self.verified = RcloneVerifyOperator(task_id=f"verify_{self.kind}", remote_path=c["object_path"], expected_size=c["bytes"],
                                             expected_sha256=c["sha256"], rclone_conn_id=REMOTE).execute({})

    def commit(self) -> None:
        """commit_manifest → retention on the remote and of the local copies."""
        dag = type("Dag", (), {"dag_id": f"pg_{self.kind}_backup"})
        CommitManifestOperator(task_id=f"commit_{self.kind}", captured=self.captured, verification=self.verified, rclone_conn_id=REMOTE,
                               local_dir=self.local_dir, outlets=[]).execute({"dag": dag, "run_id": "scheduled", "outlet_events": {}})
        settings = BackupSettings.from_env()
        for target, policy in (("remote", settings.remote_policy()), ("local", settings.local_policy())):
            RetentionOperator(task_id=f"retention_{target}_{self.kind}", target=target, policy=policy, rclone_conn_id=REMOTE,
                              local_dir=self.local_dir).execute({})

    def run(self) -> dict:
        self.capture()
        self.store()
        self.commit()
        return self.captured


@pytest.fixture
def first_deploy(make_database, local_remote, tmp_path, monkeypatch):
    """An empty source database, an empty remote, the connections as a deployment's .env gives them."""
    source = make_database("empty")
    monkeypatch.setenv("AIRFLOW_CONN_BACKUP_SOURCE", f"postgresql://{source.user}@{source.host}:{source.port}/{source.dbname}")
    monkeypatch.setenv("AIRFLOW_CONN_BACKUP_REMOTE", json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": local_remote.root}}))
    local = str(tmp_path / "local")
    return source, Chain("full", local), Chain("incremental", local), Rclone(local_remote)


def capture_sessions_waiting(dbname: str) -> int:
    conn = admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'pgbackup capture'"
                        " AND query LIKE '%%pg_try_advisory_lock%%'", (dbname,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f}s"
        time.sleep(0.05)


def committed(client) -> list:
    return Catalog.load(client, LAYOUT).backups


def test_the_incremental_starting_before_the_full_is_promoted_and_both_land(first_deploy):
    _, full, incremental, client = first_deploy
    promoted = incremental.run()
    assert promoted["kind"] == "full" and promoted["details"]["promoted_from_incremental"] == "no full backup exists yet"
    full.run()
    assert [m.kind for m in committed(client)] == ["full", "full"]


def test_full_and_incremental_waiting_together_for_the_capture_lock_both_land(first_deploy):
    source, full, incremental, client = first_deploy
    holder = source.connect()  # another capture of the database holds the lock while both tasks start
    holder.autocommit = True
    holder.cursor().execute("SELECT pg_advisory_lock(%s)", (CAPTURE_LOCK_KEY,))
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        runs = [pool.submit(chain.run) for chain in (full, incremental)]
        wait_until(lambda: capture_sessions_waiting(source.dbname) == 2, "both captures waiting for the capture lock")
    finally:
        holder.close()
        pool.shutdown(wait=True)
    captured = [run.result() for run in runs]  # a failed task raises here
    assert [c["kind"] for c in captured] == ["full", "full"]
    assert captured[1]["details"]["promoted_from_incremental"] == "no full backup exists yet"
    assert len(committed(client)) == 2


def test_the_incremental_starting_between_the_fulls_upload_and_its_manifest_is_promoted_and_both_land(first_deploy):
    _, full, incremental, client = first_deploy
    full.capture()
    full.store()
    assert Catalog.load(client, LAYOUT).orphans and not committed(client), "the full is in flight"
    promoted = incremental.capture()
    assert promoted["kind"] == "full" and promoted["details"]["promoted_from_incremental"] == "no full backup exists yet"
    done = threading.Thread(target=full.commit)
    done.start()
    incremental.store()
    incremental.commit()
    done.join()
    assert [m.kind for m in committed(client)] == ["full", "full"]


def test_the_incremental_starting_after_the_fulls_commit_builds_on_it(first_deploy):
    _, full, incremental, client = first_deploy
    parent = full.run()
    captured = incremental.run()
    assert captured["kind"] == "incremental" and captured["parent_id"] == parent["backup_id"]
    catalog = Catalog.load(client, LAYOUT)
    assert [m.id for m in catalog.chain(captured["backup_id"])] == [parent["backup_id"], captured["backup_id"]]
