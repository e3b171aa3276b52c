"""The Backups page's view model: a status report in, what the page shows out; no Airflow, no browser."""

from datetime import datetime, timedelta, timezone

from pgbackup.config.settings import BackupSettings
from pgbackup_airflow.ui_view import empty_report, page_context, relative

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def report(**overrides):
    base = {
        "now": "2026-11-29T12:00:00Z", "remote": "local:/srv/backups/database",
        "backups": [
            {"id": "20261129T090000Z-incremental-aaaaaa", "kind": "incremental", "finished_at": "2026-11-29T09:00:00Z", "bytes": 2048},
            {"id": "20261122T020000Z-full-bbbbbb", "kind": "full", "finished_at": "2026-11-22T02:00:00Z", "bytes": 5 * 1024 ** 3},
        ],
        "dags": {"pg_full_backup": {"schedule": "0 2 * * 0", "timezone": "Europe/Berlin", "next_run": "2026-12-06T01:00:00Z",
                                    "last_success": "2026-11-22T02:10:00Z", "last_failure": None, "paused": False}},
        "storage": {"total_bytes": 5 * 1024 ** 3 + 2048}, "local": None, "warnings": ["backup is stale"],
        "drill": {"backup_id": "20261122T020000Z-full-bbbbbb", "ok": True, "at": "2026-11-29T06:00:00Z"},
    }
    return {**base, **overrides}


def context(**kwargs):
    arguments = {"tz": "Europe/Berlin", "can_trigger": {}, "airflow_base": "/airflow", **kwargs}
    return page_context(arguments.pop("report", report()), **arguments)


def test_backup_times_are_shown_in_the_configured_zone_with_how_long_ago():
    (newest, full) = context()["backups"]
    assert newest["time"] == "2026-11-29 10:00 CET" and newest["ago"] == "3 h ago"
    assert full["time"] == "2026-11-22 03:00 CET" and full["ago"] == "7 d ago"


def test_sizes_are_in_human_units():
    (newest, full) = context()["backups"]
    assert (newest["size"], full["size"]) == ("2.0 KiB", "5.0 GiB")


def test_the_last_drill_is_shown_beside_the_backup_it_restored_only():
    (newest, full) = context()["backups"]
    assert newest["drill"] is None and full["drill"]["ok"] is True
    assert context()["drill"]["time"] == "2026-11-29 07:00 CET" and context()["drill"]["ago"] == "6 h ago"


def test_no_drill_yet_shows_none():
    assert context(report=report(drill=None))["drill"] is None


def test_a_dag_row_links_under_the_airflow_base_path_and_says_when_it_runs_next():
    (dag,) = context(can_trigger={"pg_full_backup": True})["dags"]
    assert dag["dag_url"] == "/airflow/dags/pg_full_backup" and dag["can_trigger"] is True
    assert dag["next"] == "2026-12-06 02:00 CET" and dag["next_in"] == "in 7 d"
    assert dag["success"] == "2026-11-22 03:10 CET" and dag["failure"] == "-"
    assert context()["api_base"] == "/airflow/api/v2"


def test_a_dag_the_user_may_not_trigger_has_its_button_off():
    (dag,) = context(can_trigger={})["dags"]
    assert dag["can_trigger"] is False


def test_warnings_and_errors_reach_the_page():
    shown = context(error="RcloneError: remote unreachable", user="admin")
    assert shown["warnings"] == ["backup is stale"] and shown["error"] == "RcloneError: remote unreachable" and shown["user"] == "admin"


def test_relative_times_round_to_the_nearest_unit():
    assert relative((NOW + timedelta(seconds=30)).isoformat(), NOW) == "in 30 s"
    assert relative((NOW - timedelta(minutes=45)).isoformat(), NOW) == "45 min ago"
    assert relative(None, NOW) == ""


def test_an_unreadable_catalog_still_shows_every_dags_schedule_and_next_run():
    settings = BackupSettings(timezone="Europe/Berlin")
    empty = empty_report(settings, NOW)
    assert set(empty["dags"]) == {"pg_full_backup", "pg_incremental_backup", "pg_restore_drill"}
    assert empty["dags"]["pg_full_backup"]["next_run"] == "2026-12-06T01:00:00Z"
    assert empty["backups"] == [] and empty["airflow"] is False
    shown = page_context(empty, tz="Europe/Berlin", can_trigger={}, airflow_base="")
    assert shown["backups"] == [] and len(shown["dags"]) == 3
