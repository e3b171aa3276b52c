"""`backupctl status` and `logs` on a real rclone remote (and Airflow's records for `logs`)."""

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import PROJECT
from factories import manifest
from pgbackup.config.settings import BackupSettings
from pgbackup.model.layout import BackupLayout
from pgbackup.report.status import next_run

LAYOUT = BackupLayout("database")
NOW = datetime.now(timezone.utc)


def store(root: Path, *manifests):
    for m in manifests:
        (root / m.artifact.path).parent.mkdir(parents=True, exist_ok=True)
        (root / m.artifact.path).write_bytes(b"x" * m.artifact.bytes)
        (root / LAYOUT.manifest_path(m.kind, m.id)).write_bytes(m.to_json())


def backupctl(local_remote, tmp_path, *args, airflow_home=None, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKUP_"))}
    env.update(
        AIRFLOW_CONN_BACKUP_REMOTE=json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": local_remote.root}}),
        BACKUP_LOCAL_DIR=str(tmp_path / "local"),
        AIRFLOW_HOME=str(airflow_home or tmp_path / "no-airflow-here"),
        **extra,
    )
    return subprocess.run([sys.executable, str(PROJECT / "bin" / "backupctl"), *args], env=env, capture_output=True, text=True, timeout=300)


def test_healthy_catalog_exits_zero_and_shows_backups_storage_and_next_runs(local_remote, tmp_path):
    full = manifest("full", NOW - timedelta(days=2), size=4000)
    inc = manifest("incremental", NOW - timedelta(hours=2), parent=full, size=300)
    store(Path(local_remote.root), full, inc)
    result = backupctl(local_remote, tmp_path, "status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert full.id in result.stdout and inc.id in result.stdout
    assert "full 1 × = 3.9 KiB, incremental 1 × = 300 B" in result.stdout
    assert "pg_incremental_backup" in result.stdout and "No warnings." in result.stdout


def test_status_json_has_next_runs_from_the_schedules(local_remote, tmp_path):
    store(Path(local_remote.root), manifest("full", NOW - timedelta(hours=1)))
    result = backupctl(local_remote, tmp_path, "status", "--json", BACKUP_TIMEZONE="Europe/Berlin")
    report = json.loads(result.stdout)
    settings = BackupSettings.from_env({"BACKUP_TIMEZONE": "Europe/Berlin"})
    expected = next_run(settings.incremental_schedule, "Europe/Berlin", datetime.fromisoformat(report["now"].replace("Z", "+00:00")))
    assert report["dags"]["pg_incremental_backup"]["next_run"] == expected.isoformat().replace("+00:00", "Z")
    assert report["storage"]["full"]["count"] == 1 and report["warnings"] == []


def test_next_run_follows_the_timezone():
    now = datetime(2026, 11, 28, 23, 30, tzinfo=timezone.utc)  # Sunday 00:30 in Berlin
    assert next_run("0 2 * * 0", "Europe/Berlin", now) == datetime(2026, 11, 29, 1, 0, tzinfo=timezone.utc)
    assert next_run("0 2 * * 0", "UTC", now) == datetime(2026, 11, 29, 2, 0, tzinfo=timezone.utc)


def test_stale_catalog_warns_in_plain_words_and_exits_nonzero(local_remote, tmp_path):
    full = manifest("full", NOW - timedelta(days=9))
    inc = manifest("incremental", NOW - timedelta(hours=8), parent=full)
    store(Path(local_remote.root), full, inc)
    result = backupctl(local_remote, tmp_path, "status")
    assert result.returncode == 2
    warnings = result.stdout.split("WARNINGS", 1)[1]
    assert "no full backup" in warnings.lower() and "rpo" in warnings.lower()


def test_empty_remote_warns(local_remote, tmp_path):
    result = backupctl(local_remote, tmp_path, "status")
    assert result.returncode == 2 and "No backups yet." in result.stdout


@pytest.mark.airflow
def test_logs_show_failed_tasks_with_their_error_line(airflow_home, local_remote, tmp_path):
    env = dict(os.environ)
    env.update(
        AIRFLOW_CONN_BACKUP_SOURCE="postgresql://postgres@127.0.0.1:5432/pgb_no_such_db_for_logs",
        AIRFLOW_CONN_BACKUP_REMOTE=json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": local_remote.root}}),
        BACKUP_LOCAL_DIR=str(tmp_path / "local"),
    )
    failed = subprocess.run([sys.executable, str(PROJECT / "bin" / "backupctl"), "full"], env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1
    assert 'database "pgb_no_such_db_for_logs" does not exist' in failed.stderr
    result = backupctl(local_remote, tmp_path, "logs", "--failed", "--dag", "pg_full_backup", "-n", "5", "--json", airflow_home=airflow_home)
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert records[0]["task_id"] == "backup.dump_compress_checksum" and records[0]["state"] == "failed"
    assert records[0]["database"] == "database"  # the mapped instance's name
    assert "pgb_no_such_db_for_logs" in records[0]["error"]
    narrowed = backupctl(local_remote, tmp_path, "logs", "--database", "database", "--json", airflow_home=airflow_home)
    assert json.loads(narrowed.stdout) and all(r["database"] == "database" for r in json.loads(narrowed.stdout))
    unknown = backupctl(local_remote, tmp_path, "logs", "--database", "crm", airflow_home=airflow_home)
    assert unknown.returncode == 1 and "no database called 'crm'; configured: database" in unknown.stderr


def test_status_reads_a_local_copy_as_well_as_a_remote(tmp_path):
    """Any store serves: the local copies report their folder and no quota (the disk's free space is reported apart)."""
    from pgbackup.report.status import collect_status
    from pgbackup.storage.store import LocalStore

    full = manifest("full", NOW - timedelta(hours=2), size=4000)
    store(tmp_path / "copies", full)
    report = collect_status(LocalStore(tmp_path / "copies"), BackupSettings(local_dir=tmp_path / "copies"), now=NOW)
    assert report["remote"] == str(tmp_path / "copies" / "database")
    assert report["storage"]["quota"] is None and [b["id"] for b in report["backups"]] == [full.id]


def test_next_runs_are_the_dags_own_timetables_across_the_autumn_dst_fold(local_remote, tmp_path):
    """Europe/Berlin, Sunday 2027-10-31: 02:00 happens twice.  Status says what Airflow's scheduler will do."""
    from airflow.timetables.base import TimeRestriction
    from airflow.timetables.trigger import CronTriggerTimetable

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKUP_"))}
    env.update(
        AIRFLOW_CONN_BACKUP_REMOTE=json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": local_remote.root}}),
        BACKUP_LOCAL_DIR=str(tmp_path / "local"), AIRFLOW_HOME=str(tmp_path / "no-airflow-here"),
        BACKUP_TIMEZONE="Europe/Berlin", FAKETIME_DONT_FAKE_MONOTONIC="1", TZ="UTC",
    )
    result = subprocess.run(["faketime", "-f", "@2027-10-30 23:00:00", sys.executable, str(PROJECT / "bin" / "backupctl"), "status", "--json"],
                            env=env, capture_output=True, text=True, timeout=300)
    report = json.loads(result.stdout)
    now = datetime.fromisoformat(report["now"].replace("Z", "+00:00"))
    assert now.date().isoformat() == "2027-10-30"
    for dag_id, cron in (("pg_full_backup", "0 2 * * 0"), ("pg_incremental_backup", "0 0,6,12,18 * * *"), ("pg_restore_drill", "0 6 * * 0")):
        scheduler = CronTriggerTimetable(cron, timezone="Europe/Berlin").next_dagrun_info(
            last_automated_data_interval=None, restriction=TimeRestriction(earliest=now, latest=None, catchup=True))
        assert report["dags"][dag_id]["next_run"] == scheduler.run_after.in_timezone("UTC").isoformat().replace("+00:00", "Z"), dag_id
    # the full backup runs at the second 02:00 (CET, 01:00 UTC); croniter would have said the first (00:00 UTC)
    assert report["dags"]["pg_full_backup"]["next_run"] == "2027-10-31T01:00:00Z"
    assert next_run("0 2 * * 0", "Europe/Berlin", now) == datetime(2027, 10, 31, 0, 0, tzinfo=timezone.utc)


def test_a_remote_root_that_does_not_exist_is_named_not_shown_as_no_backups(tmp_path):
    from rclone_provider.client import RemoteConfig

    missing = RemoteConfig.from_extra("backup_remote", {"type": "local", "root": str(tmp_path / "typo-in-the-root")})
    listed = backupctl(missing, tmp_path, "list")
    assert listed.returncode == 1 and "No backups" not in listed.stdout
    assert f"the remote root backupremote:{tmp_path}/typo-in-the-root does not exist" in listed.stderr
    status = backupctl(missing, tmp_path, "status")
    assert status.returncode == 2 and "typo-in-the-root does not exist" in status.stdout.split("WARNINGS", 1)[1]


def test_a_failed_drill_that_chose_no_backup_says_so_instead_of_none(local_remote, tmp_path):
    store(Path(local_remote.root), manifest("full", NOW - timedelta(hours=1)))
    record = {"at": "2026-11-29T06:00:00Z", "backup_id": None, "chain": [], "ok": False, "seconds": 0.1,
              "error": "several sources stored and none chosen", "scratch_database": "pgbackup_drill_x"}
    drill_file = Path(local_remote.root) / LAYOUT.drill_path(NOW - timedelta(minutes=5))
    drill_file.parent.mkdir(parents=True)
    drill_file.write_text(json.dumps(record))
    result = backupctl(local_remote, tmp_path, "status")
    line = next(x for x in result.stdout.splitlines() if x.startswith("Last restore drill:"))
    assert "None" not in line
    assert "FAILED" in line and "no backup point chosen (the newest was asked for)" in line
    report = json.loads(backupctl(local_remote, tmp_path, "status", "--json").stdout)
    assert report["drill"]["backup_id"] is None and report["drill"]["point"] == "no backup point chosen (the newest was asked for)"


def test_status_projects_storage_growth_in_text_and_json(local_remote, tmp_path):
    store(Path(local_remote.root), manifest("full", NOW - timedelta(days=8), size=1000), manifest("full", NOW - timedelta(days=1), size=1700))
    report = json.loads(backupctl(local_remote, tmp_path, "status", "--json").stdout)
    growth = report["growth"]
    assert growth["full_growth_per_day"] == 100 and growth["fulls_kept"] == 9  # weekly fulls, 8 weeks kept
    assert [m["month"] for m in growth["months"]] == list(range(1, 13))
    assert growth["months"][0]["stored_bytes"] == 9 * growth["months"][0]["full_bytes"]
    assert [w["added_bytes"] for w in growth["weeks"] if w["added_bytes"]] == [1000, 1700]
    text = backupctl(local_remote, tmp_path, "status").stdout
    assert "Growth: a full grows 700 B/week; retention keeps 9 fulls and 0 incrementals:" in text
    assert "within the remote's quota of" in text


def test_status_warns_when_the_projection_outgrows_the_quota(local_remote, tmp_path):
    store(Path(local_remote.root), manifest("full", NOW - timedelta(hours=1), size=1000))
    result = backupctl(local_remote, tmp_path, "status", BACKUP_REMOTE_QUOTA_BYTES="5000")
    assert result.returncode == 2
    assert "storage projection: the backups outgrow the remote's quota by" in result.stdout
    assert "over the remote's quota of 4.9 KiB by" in result.stdout


def test_a_remote_defined_only_in_airflow_is_read_through_the_airflow_command(airflow_home, local_remote, tmp_path):
    """No ``AIRFLOW_CONN_BACKUP_REMOTE``: the CLI asks ``airflow connections get`` (it never imports Airflow itself)."""
    conn_id = "pgb_remote_only_in_airflow"
    extra = json.dumps({"type": "local", "root": local_remote.root})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "BACKUP_"))}
    env.update(AIRFLOW_HOME=str(airflow_home), BACKUP_REMOTE_CONN_ID=conn_id, BACKUP_LOCAL_DIR=str(tmp_path / "local"))
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "connections", "delete", conn_id], env=env, capture_output=True)
    subprocess.run([airflow, "connections", "add", conn_id, "--conn-type", "rclone", "--conn-extra", extra], env=env, check=True,
                   capture_output=True)
    try:
        store(Path(local_remote.root), manifest("full", NOW - timedelta(hours=1)))
        listed = subprocess.run([sys.executable, str(PROJECT / "bin" / "backupctl"), "list", "--json"], env=env, capture_output=True,
                                text=True, timeout=300)
        assert listed.returncode == 0, listed.stderr
        assert [b["kind"] for b in json.loads(listed.stdout)] == ["full"]
    finally:
        subprocess.run([airflow, "connections", "delete", conn_id], env=env, capture_output=True)
