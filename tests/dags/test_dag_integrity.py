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
clock = lambda t: getattr(t, "timetable", t)  # an AssetOrTimeSchedule's clock is the timetable it wraps
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {d.dag_id: {"summary": getattr(clock(d.timetable), "expression", None), "tz": str(getattr(clock(d.timetable), "timezone", None)),
                        "schedule": type(d.timetable).__name__,
                        "after_assets": sorted(a.uri for a in getattr(getattr(d.timetable, "asset_condition", None), "objects", [])),
                        "params": {k: d.params.get_param(k).schema for k in d.params},
                        "pools": {t.task_id: t.pool for t in d.tasks}, "catchup": d.catchup,
                        "max_active_runs": d.max_active_runs,
                        "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in d.tasks},
                        "mapped": {t.task_id: getattr(t, "map_index_template", None) for t in d.tasks
                                   if t.get_closest_mapped_task_group() is not None or type(t).__name__ == "MappedOperator"},
                        "lineage_lists": all(isinstance(t.inlets, list) and isinstance(t.outlets, list) for t in d.tasks),
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
        # a mapped operator whose class lacks its own __init__ gets inlets=None from Airflow and cannot start
        assert dags[dag_id]["lineage_lists"], dag_id


def test_schedule_and_timezone_come_from_the_settings():
    full = load_dags(BACKUP_TIMEZONE="Europe/Berlin", BACKUP_FULL_SCHEDULE="30 3 * * 6")["dags"]["pg_full_backup"]
    assert full["summary"] == "30 3 * * 6" and full["tz"] == "Europe/Berlin"


def test_bad_settings_are_an_import_error_naming_the_variable():
    errors = load_dags(BACKUP_REMOTE_FULL_RETENTION="forever")["errors"]
    assert any("BACKUP_REMOTE_FULL_RETENTION" in e for e in errors.values())


def test_every_backup_dag_is_there_with_one_run_at_a_time(default_dags):
    dags = default_dags["dags"]
    assert set(dags) == {"pg_full_backup", "pg_incremental_backup", "pg_restore_drill", "pg_backup_staleness", "pg_restore_to_staging"}
    assert dags["pg_restore_to_staging"]["schedule"] == "NullTimetable"
    assert dags["pg_incremental_backup"]["summary"] == "0 0,6,12,18 * * *"
    assert dags["pg_restore_drill"]["summary"] == "0 6 * * 0" and dags["pg_backup_staleness"]["summary"] == "0 * * * *"
    for dag in dags.values():
        assert dag["catchup"] is False and dag["max_active_runs"] == 1
        assert dag["owners"] == ["backup"] and "backup" in dag["tags"]


def test_every_task_of_every_dag_alerts_on_failure_once_recipients_are_set():
    dags = load_dags(BACKUP_ALERT_EMAILS="ops@example.com")["dags"]
    assert all(dag["alerting"] for dag in dags.values())


def test_the_drill_runs_after_every_databases_full_backup_asset_or_its_clock():
    dags = load_dags(BACKUP_DATABASES="shop=src_shop, blog=src_blog")["dags"]
    drill = dags["pg_restore_drill"]
    assert drill["schedule"] == "AssetOrTimeSchedule" and drill["summary"] == "0 6 * * 0"
    assert drill["after_assets"] == ["pgbackup://backup_remote/blog/full", "pgbackup://backup_remote/shop/full"]
    assert dags["pg_full_backup"]["schedule"] == "CronTriggerTimetable"


def test_manual_triggers_offer_the_configured_databases_and_the_drill_a_backup_id():
    dags = load_dags(BACKUP_DATABASES="shop=src_shop, blog=src_blog")["dags"]
    for dag_id in ("pg_full_backup", "pg_incremental_backup", "pg_restore_drill"):
        assert dags[dag_id]["params"]["database"]["enum"] == [None, "shop", "blog"], dag_id
    assert dags["pg_restore_drill"]["params"]["backup_id"]["type"] == ["null", "string"]


def test_every_capture_takes_a_slot_of_the_configured_pool():
    default, chosen = load_dags()["dags"], load_dags(BACKUP_POOL="dumps")["dags"]
    assert default["pg_full_backup"]["pools"]["backup.dump_compress_checksum"] == "pgbackup"
    assert chosen["pg_incremental_backup"]["pools"]["backup.capture_changes"] == "dumps"
    assert chosen["pg_full_backup"]["pools"]["backup.check_archive"] == "default_pool"


def test_the_dag_files_use_the_one_list_of_dag_ids(default_dags):
    from pgbackup.config import dag_ids

    written = {dag_ids.FULL_BACKUP, dag_ids.INCREMENTAL_BACKUP, dag_ids.RESTORE_DRILL, dag_ids.STALENESS_CHECK, dag_ids.RESTORE_TO_STAGING}
    assert set(default_dags["dags"]) == written
    assert set(dag_ids.BACKUP_DAGS) <= written and set(dag_ids.BACKUP_DAG_OF_KIND.values()) <= written


def test_both_backup_dags_tell_how_to_trigger_one_database(default_dags):
    probe = "from airflow.dag_processing.dagbag import DagBag; import json; bag = DagBag(dag_folder=%r); " \
            "print(json.dumps({d: bag.dags[d].doc_md for d in ('pg_full_backup', 'pg_incremental_backup')}))"
    out = subprocess.run([sys.executable, "-c", probe % str(PROJECT / "dags")], capture_output=True, text=True, check=True)
    docs = json.loads(out.stdout.strip().splitlines()[-1])
    assert "### Weekly full backup" in docs["pg_full_backup"] and "pgbackup://<remote>/<prefix>/full" in docs["pg_full_backup"]
    assert "pgbackup://<remote>/<prefix>/incremental" in docs["pg_incremental_backup"]
    assert all('Trigger with `{"database": "shop"}`' in doc for doc in docs.values())
