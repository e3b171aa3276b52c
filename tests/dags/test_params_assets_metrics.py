"""Airflow-native behaviour of the backup DAGs, run for real with `airflow dags test`:
a manual trigger's `database` Param, the asset event each committed backup emits, and the metrics sent through
Airflow's own Stats to a StatsD listener on loopback."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess

import pytest

from conftest import PG_SERVER_URL, airflow_cli, seeded_shop
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from rclone_provider.client import Rclone

pytestmark = pytest.mark.airflow


@pytest.fixture
def two_databases(airflow_home, make_database, local_remote, tmp_path):
    shop, blog = seeded_shop(make_database, "shop", 7), seeded_shop(make_database, "blog", 11)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "BACKUP_"))}
    env.update(
        BACKUP_DATABASES="shop=src_shop, blog=src_blog",
        AIRFLOW_CONN_SRC_SHOP=f"{PG_SERVER_URL}/{shop.dbname}",
        AIRFLOW_CONN_SRC_BLOG=f"{PG_SERVER_URL}/{blog.dbname}",
        AIRFLOW_CONN_BACKUP_REMOTE=json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": local_remote.root}}),
        BACKUP_LOCAL_DIR=str(tmp_path / "local"),
        BACKUP_TASK_RETRIES="0",
    )
    return env


@pytest.fixture
def statsd_listener():
    """A UDP socket on 127.0.0.1 standing in for a StatsD server: ``(port, receive)``; receive() drains what arrived."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)

    def receive() -> list[str]:
        lines = []
        while True:
            try:
                lines += sock.recv(65536).decode().splitlines()
            except BlockingIOError:
                return lines

    yield sock.getsockname()[1], receive
    sock.close()


def statsd_env(port: int) -> dict[str, str]:
    return {"AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(port), "AIRFLOW__METRICS__STATSD_PREFIX": "airflow"}


def dags_test(dag_id: str, env: dict[str, str], conf: dict | None = None) -> subprocess.CompletedProcess:
    argv = [airflow_cli(), "dags", "test", dag_id, *(["-c", json.dumps(conf)] if conf else [])]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


def asset_events(airflow_home, uri: str) -> list[dict]:
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        rows = db.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ? ORDER BY e.id", (uri,)
        ).fetchall()
    return [json.loads(extra) for (extra,) in rows]


def test_a_manual_run_for_one_database_backs_up_only_that_one(two_databases, local_remote):
    result = dags_test("pg_full_backup", two_databases, {"database": "blog"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    remote = Rclone(local_remote)
    (backup,) = Catalog.load(remote, BackupLayout("blog")).backups
    assert backup.kind == "full"
    assert Catalog.load(remote, BackupLayout("shop")).backups == []


def test_a_database_that_is_not_configured_is_refused_by_param_validation(two_databases, local_remote):
    result = dags_test("pg_full_backup", two_databases, {"database": "payroll"})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ParamValidationError" in output and "payroll" in output and "is not one of" in output
    assert [o for o in Rclone(local_remote).list("", recursive=True)] == []


def test_each_committed_backup_emits_its_databases_asset_event(two_databases, local_remote, airflow_home):
    result = dags_test("pg_full_backup", two_databases)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    for name in ("shop", "blog"):
        (backup,) = Catalog.load(Rclone(local_remote), BackupLayout(name)).backups
        events = [e for e in asset_events(airflow_home, f"pgbackup://backup_remote/{name}/full") if e.get("id") == backup.id]
        assert events == [{"id": backup.id, "kind": "full", "bytes": backup.artifact.bytes, "sha256": backup.artifact.sha256,
                           "database": name, "remote": "backup_remote"}]


def test_backup_and_drill_metrics_reach_statsd(two_databases, statsd_listener):
    port, receive = statsd_listener
    env = {**two_databases, **statsd_env(port)}
    assert dags_test("pg_full_backup", env, {"database": "shop"}).returncode == 0
    backup_lines = receive()
    assert dags_test("pg_restore_drill", env, {"database": "shop"}).returncode == 0
    drill_lines = receive()
    names = {line.split(":", 1)[0] for line in backup_lines}
    assert {"airflow.pgbackup.backup.shop.full.bytes", "airflow.pgbackup.backup.shop.full.seconds",
            "airflow.pgbackup.backup.shop.full.committed"} <= names, backup_lines
    assert not any(".blog." in n for n in names if n.startswith("airflow.pgbackup."))
    (size,) = [line for line in backup_lines if line.startswith("airflow.pgbackup.backup.shop.full.bytes:")]
    assert size.endswith("|g") and int(size.split(":")[1].split("|")[0]) > 0
    drill_names = {line.split(":", 1)[0] for line in drill_lines}
    assert {"airflow.pgbackup.drill.shop.rto_seconds", "airflow.pgbackup.drill.shop.ok"} <= drill_names, drill_lines
    assert "airflow.pgbackup.drill.shop.ok:1|g" in drill_lines


def test_the_staleness_check_reports_the_newest_backups_age_to_statsd(two_databases, statsd_listener):
    port, receive = statsd_listener
    env = {**two_databases, **statsd_env(port)}
    assert dags_test("pg_full_backup", env, {"database": "shop"}).returncode == 0
    receive()
    dags_test("pg_backup_staleness", env)  # blog has none yet (skips); shop reports its age
    ages = [line for line in receive() if line.startswith("airflow.pgbackup.staleness.shop.newest_age_seconds:")]
    assert ages and ages[-1].endswith("|g") and 0 <= float(ages[-1].split(":")[1].split("|")[0]) < 3600
