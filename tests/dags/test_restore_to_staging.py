"""pg_restore_to_staging, run for real with `airflow dags test -c '{...}'`: a staging database refreshed exactly from a
backup; a wrong confirmation, a target that is not a staging connection, or a source are refused before anything is
touched."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import airflow_cli, backup_env
from pgcompare import library_fingerprints

pytestmark = pytest.mark.airflow


def conn_uri(target) -> str:
    return f"postgresql://{target.user}@{target.host}:{target.port}/{target.dbname}"


@pytest.fixture
def backed_up(airflow_home, shop_db, local_remote, make_database, tmp_path):
    """A full backup of the shop on the remote, and an environment whose one staging connection is ``staging_shop``."""
    staging = make_database("staging")
    env = backup_env(shop_db, {"type": "local", "root": local_remote.root}, tmp_path / "local",
                     AIRFLOW_CONN_STAGING_SHOP=conn_uri(staging), BACKUP_STAGING_CONN_IDS="staging_shop")
    result = subprocess.run([airflow_cli(), "dags", "test", "pg_full_backup"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return env, staging


def restore_to_staging(env, conf: dict) -> subprocess.CompletedProcess:
    return subprocess.run([airflow_cli(), "dags", "test", "pg_restore_to_staging", "-c", json.dumps(conf)],
                          env=env, capture_output=True, text=True, timeout=300)


def marker_rows(target) -> list[tuple]:
    conn = target.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT note FROM staging_marker")
            return cur.fetchall()
    finally:
        conn.close()


def put_marker(target) -> None:
    conn = target.connect()
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE staging_marker (note text); INSERT INTO staging_marker VALUES ('untouched')")
    conn.close()


def test_the_newest_backup_restores_into_the_staging_database_exactly(backed_up, shop_db):
    env, staging = backed_up
    result = restore_to_staging(env, {"target": "staging_shop", "confirm": staging.dbname})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert library_fingerprints(staging) == library_fingerprints(shop_db)


def test_clean_replaces_a_staging_database_that_holds_data(backed_up, shop_db):
    env, staging = backed_up
    put_marker(staging)
    result = restore_to_staging(env, {"target": "staging_shop", "confirm": staging.dbname, "clean": True})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert library_fingerprints(staging) == library_fingerprints(shop_db)


def test_a_wrong_confirmation_is_refused_before_anything_is_touched(backed_up):
    env, staging = backed_up
    put_marker(staging)
    result = restore_to_staging(env, {"target": "staging_shop", "confirm": "shop", "clean": True})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"confirm must be the target's database name, '{staging.dbname}'" in output and "Nothing was touched" in output
    assert "Restoring" not in output
    assert marker_rows(staging) == [("untouched",)]


def test_a_target_that_is_not_a_staging_connection_is_refused_by_param_validation(backed_up):
    env, _ = backed_up
    result = restore_to_staging(env, {"target": "backup_source", "confirm": "x"})
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "ParamValidationError" in output and "is not one of" in output


def test_a_staging_connection_that_points_at_the_source_is_refused(backed_up, shop_db):
    env, _ = backed_up
    env = {**env, "AIRFLOW_CONN_STAGING_SHOP": conn_uri(shop_db)}
    before = library_fingerprints(shop_db)
    result = restore_to_staging(env, {"target": "staging_shop", "confirm": shop_db.dbname, "clean": True})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "refused" in output and "the backup's source" in output
    assert library_fingerprints(shop_db) == before
