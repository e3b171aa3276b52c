"""Scaling out is Airflow's job: pg_full_backup on the real CeleryExecutor.

A scheduler, a dag-processor, the api-server and two Celery workers on a real Redis broker
(tests/celery_cluster.py) back up three databases in one run: each database is one map
index of the ``backup`` task group, every task lands on a worker, both workers take part,
the three captures run at the same time, and each database's backup lands on the remote
under its own prefix.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from celery_cluster import CeleryCluster
from conftest import PROJECT, seeded_shop
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from pgbackup.postgres.target import PgTarget
from rclone_provider.client import Rclone

pytestmark = pytest.mark.airflow

DAG_ID = "pg_full_backup"
WORKERS = ("worker-a", "worker-b")
DATABASES = ("shop", "blog", "crm")
CAPTURE = "backup.dump_compress_checksum"


def connection_uri(target: PgTarget) -> str:
    return f"postgresql://{target.user}@{target.host}:{target.port}/{target.dbname}"


def worker_healthcheck() -> str:
    """The shell command docker-compose.yaml probes airflow-worker with (``$$`` is Compose's literal ``$``)."""
    test = yaml.safe_load((PROJECT / "docker-compose.yaml").read_text())["services"]["airflow-worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    return test[1].replace("$$", "$")


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def sources(make_database) -> dict[str, PgTarget]:
    """Three databases, each holding the sample shop (scale 1), by the name they are backed up under."""
    return {name: seeded_shop(make_database, name) for name in DATABASES}


def test_three_databases_are_backed_up_in_parallel_on_two_celery_workers(sources, local_remote, tmp_path):
    env = {
        "BACKUP_DATABASES": ",".join(f"{name}=source_{name}" for name in DATABASES),
        **{f"AIRFLOW_CONN_SOURCE_{name.upper()}": connection_uri(target) for name, target in sources.items()},
        "AIRFLOW_CONN_BACKUP_REMOTE": json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": local_remote.root}}),
        # one folder for both workers, as the README asks of a Celery deployment
        "BACKUP_LOCAL_DIR": str(tmp_path / "local copies"),
        "BACKUP_POOL_SLOTS": str(len(DATABASES)),  # room for every capture at once
    }
    with CeleryCluster(tmp_path / "cluster", env, workers=WORKERS, concurrency=2) as cluster:
        cluster.wait_for_dag(DAG_ID)
        run_id = cluster.trigger(DAG_ID)
        state = cluster.wait_for_run(DAG_ID, run_id, timeout=600)
        tis = cluster.task_instances(DAG_ID, run_id)
        report = cluster.diagnostics(DAG_ID, run_id)

        assert state == "success", report
        assert tis and all(ti["state"] == "success" for ti in tis), report
        # every task ran on one of the two workers, and both took part
        assert {ti["hostname"] for ti in tis} == set(WORKERS), report

        # one capture per database, as the map indexes of the backup group
        captures = [ti for ti in tis if ti["task_id"] == CAPTURE]
        assert sorted(ti["rendered_map_index"] for ti in captures) == sorted(DATABASES), report
        assert {ti["hostname"] for ti in captures} == set(WORKERS), f"all captures on one worker:\n{report}"
        # ... and they ran at the same time: each started before any of the others ended
        latest_start = max(when(ti["start_date"]) for ti in captures)
        earliest_end = min(when(ti["end_date"]) for ti in captures)
        assert latest_start < earliest_end, "\n".join(
            f"{ti['rendered_map_index']}: {ti['start_date']} .. {ti['end_date']} on {ti['hostname']}" for ti in captures
        )

        # docker-compose.yaml's healthcheck of airflow-worker answers for real workers
        probe = worker_healthcheck()
        for name, result in cluster.shell_beside_workers(probe).items():
            assert result.returncode == 0 and f"celery@{name}: OK" in result.stdout, f"{probe}\n{result.stdout[-3000:]}"

    # each database's backup, object and manifest, under its own prefix on the remote
    client = Rclone(local_remote)
    for name, target in sources.items():
        catalog = Catalog.load(client, BackupLayout(name))
        assert catalog.problems == [] and catalog.orphans == [], name
        (backup,) = catalog.backups
        assert backup.kind == "full" and backup.database == target.dbname, name
        assert backup.artifact.path == f"{name}/full/{backup.id}.dump.zst"
        assert backup.verified["method"] in ("remote sha256", "download and sha256")
        for path in (backup.artifact.path, f"{name}/full/{backup.id}.manifest.json"):
            assert (Path(local_remote.root) / path).is_file(), path
    # and nothing else: no backup under the single-database prefix, no stray folder
    assert {o.path.split("/", 1)[0] for o in client.list("", recursive=True)} == set(DATABASES)
