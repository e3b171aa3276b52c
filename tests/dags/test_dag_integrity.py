"""Every DAG file imports cleanly, and schedules follow the settings."""

import json
import os
import subprocess
import sys

import pytest
from conftest import PROJECT

PROBE = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=%r)
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {d.dag_id: {"summary": d.timetable.expression, "tz": str(d.timetable.timezone), "catchup": d.catchup,
                        "max_active_runs": d.max_active_runs,
                        "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in d.tasks},
                        "mapped": {t.task_id: getattr(t, "map_index_template", None) for t in d.tasks
                                   if t.get_closest_mapped_task_group() is not None or type(t).__name__ == "MappedOperator"},
                        "tags": sorted(d.tags), "owners": sorted({t.owner for t in d.tasks}),
                        "alerting": all(bool(t.on_failure_callback) for t in d.tasks)} for d in bag.dags.values()},
}))
"""


def load_dags(**env_overrides):
    env = {**os.environ, **env_overrides}
    out = subprocess.run([sys.executable, "-c", PROBE % str(PROJECT / "dags")], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def default_dags():
    return load_dags()


def test_every_dag_file_imports_without_errors(default_dags):
    assert default_dags["errors"] == {}
    assert "pg_full_backup" in default_dags["dags"]


def test_full_backup_runs_sundays_at_two_in_utc_by_default(default_dags):
    full = default_dags["dags"]["pg_full_backup"]
    assert full["summary"] == "0 2 * * 0" and full["tz"] == "UTC"
    assert full["catchup"] is False and full["max_active_runs"] == 1


def test_full_backup_chains_the_steps_in_order(default_dags):
    upstream = default_dags["dags"]["pg_full_backup"]["upstream"]
    chain = ["backup.dump_compress_checksum", "backup.check_archive", "backup.upload", "backup.verify", "backup.commit_manifest"]
    assert upstream["backup.dump_compress_checksum"] == []
    for before, after in zip(chain, chain[1:]):
        assert before in upstream[after]
    assert upstream["backup.retention_remote"] == upstream["backup.retention_local"] == ["backup.commit_manifest"]


def test_every_database_is_a_mapped_instance_named_after_it():
    dags = load_dags(BACKUP_DATABASES="shop=shop_source, blog=blog_source, crm=crm_source")["dags"]
    for dag_id, first in [("pg_full_backup", "backup.dump_compress_checksum"), ("pg_incremental_backup", "backup.capture_changes"),
                          ("pg_restore_drill", "restore_and_check"), ("pg_backup_staleness", "check_backup_freshness")]:
        mapped = dags[dag_id]["mapped"]
        assert set(mapped) == set(dags[dag_id]["upstream"]), f"{dag_id}: every task is per database"
        assert mapped[first] == '{{ ["shop", "blog", "crm"][ti.map_index] }}'


def test_schedule_and_timezone_come_from_the_settings():
    full = load_dags(BACKUP_TIMEZONE="Europe/Berlin", BACKUP_FULL_SCHEDULE="30 3 * * 6")["dags"]["pg_full_backup"]
    assert full["summary"] == "30 3 * * 6" and full["tz"] == "Europe/Berlin"


def test_bad_settings_are_an_import_error_naming_the_variable():
    errors = load_dags(BACKUP_REMOTE_FULL_RETENTION="forever")["errors"]
    assert any("BACKUP_REMOTE_FULL_RETENTION" in e for e in errors.values())


def test_every_backup_dag_is_there_with_one_run_at_a_time(default_dags):
    dags = default_dags["dags"]
    assert set(dags) == {"pg_full_backup", "pg_incremental_backup", "pg_restore_drill", "pg_backup_staleness"}
    assert dags["pg_incremental_backup"]["summary"] == "0 0,6,12,18 * * *"
    assert dags["pg_restore_drill"]["summary"] == "0 6 * * 0" and dags["pg_backup_staleness"]["summary"] == "0 * * * *"
    for dag in dags.values():
        assert dag["catchup"] is False and dag["max_active_runs"] == 1
        assert dag["owners"] == ["backup"] and "backup" in dag["tags"]


def test_every_task_of_every_dag_alerts_on_failure_once_recipients_are_set():
    dags = load_dags(BACKUP_ALERT_EMAILS="ops@example.com")["dags"]
    assert all(dag["alerting"] for dag in dags.values())
