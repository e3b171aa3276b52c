"""The capture pool, on a real scheduler: `airflow dags test` runs tasks one after another and ignores pools, so only
a scheduler with an executor can show that N databases do not run N pg_dumps at once.

Three databases, ``BACKUP_POOL_SLOTS=1``, two Celery workers with room for four tasks: the three captures still run
one at a time (each ends before the next starts), while the run as a whole succeeds.
"""

from __future__ import annotations

import json
import urllib.parse
from datetime import datetime

import pytest

from celery_cluster import CeleryCluster
from conftest import seeded_shop

pytestmark = pytest.mark.airflow

DATABASES = ("shop", "blog", "crm")
CAPTURE = "backup.dump_compress_checksum"


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_pool_of_one_slot_runs_the_captures_of_three_databases_one_at_a_time(make_database, local_remote, tmp_path):
    sources = {name: seeded_shop(make_database, name) for name in DATABASES}
    env = {
        "BACKUP_DATABASES": ",".join(f"{name}=source_{name}" for name in DATABASES),
        **{f"AIRFLOW_CONN_SOURCE_{name.upper()}": f"postgresql://{t.user}@{t.host}:{t.port}/{t.dbname}" for name, t in sources.items()},
        "AIRFLOW_CONN_BACKUP_REMOTE": json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": local_remote.root}}),
        "BACKUP_LOCAL_DIR": str(tmp_path / "local copies"),
        "BACKUP_POOL": "pg_dumps",
        "BACKUP_POOL_SLOTS": "1",
    }
    with CeleryCluster(tmp_path / "cluster", env, concurrency=2) as cluster:
        cluster.wait_for_dag("pg_full_backup")
        run_id = cluster.trigger("pg_full_backup")
        state = cluster.wait_for_run("pg_full_backup", run_id, timeout=600)
        report = cluster.diagnostics("pg_full_backup", run_id)
        captures = sorted((ti for ti in cluster.task_instances("pg_full_backup", run_id) if ti["task_id"] == CAPTURE),
                          key=lambda ti: when(ti["start_date"]))
        pool = cluster.request("GET", "/api/v2/pools/pg_dumps")
    assert state == "success", report
    assert pool["slots"] == 1
    assert sorted(ti["rendered_map_index"] for ti in captures) == sorted(DATABASES)
    spans = "\n".join(f"{ti['rendered_map_index']}: {ti['start_date']} .. {ti['end_date']}" for ti in captures)
    for earlier, later in zip(captures, captures[1:]):
        assert when(earlier["end_date"]) <= when(later["start_date"]), f"captures overlapped:\n{spans}"
    assert [ti["pool"] for ti in captures] == ["pg_dumps"] * 3


def test_the_full_backups_asset_events_start_the_drill_on_a_real_scheduler(make_database, local_remote, tmp_path):
    """AssetOrTimeSchedule for real: the full's commits (one asset event per database) make the scheduler start the drill."""
    sources = {name: seeded_shop(make_database, name) for name in DATABASES[:2]}
    env = {
        "BACKUP_DATABASES": ",".join(f"{name}=source_{name}" for name in sources),
        **{f"AIRFLOW_CONN_SOURCE_{name.upper()}": f"postgresql://{t.user}@{t.host}:{t.port}/{t.dbname}" for name, t in sources.items()},
        "AIRFLOW_CONN_BACKUP_REMOTE": json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": local_remote.root}}),
        "BACKUP_LOCAL_DIR": str(tmp_path / "local copies"),
        # Asset-triggered runs are made where scheduled ones are: the scheduler must schedule.  Unpausing then also
        # starts each DAG's latest cron run (catchup=False); those are told apart by their run_type.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
    }
    with CeleryCluster(tmp_path / "cluster", env, concurrency=2) as cluster:
        cluster.wait_for_dag("pg_full_backup")
        cluster.wait_for_dag("pg_restore_drill")
        cluster.request("PATCH", "/api/v2/dags/pg_restore_drill", {"is_paused": False})
        run_id = cluster.trigger("pg_full_backup")
        assert cluster.wait_for_run("pg_full_backup", run_id, timeout=600) == "success", cluster.diagnostics("pg_full_backup", run_id)
        events = cluster.request("GET", f"/api/v2/assets/events?source_run_id={urllib.parse.quote(run_id)}")["asset_events"]
        assert sorted(e["uri"] for e in events) == [f"pgbackup://backup_remote/{name}/full" for name in sorted(sources)]
        assert {e["extra"]["database"] for e in events} == set(sources)
        drill = cluster.wait_for_new_run("pg_restore_drill", "asset_triggered", timeout=180)
        assert cluster.wait_for_run("pg_restore_drill", drill["dag_run_id"], timeout=600) == "success", \
            cluster.diagnostics("pg_restore_drill", drill["dag_run_id"])
