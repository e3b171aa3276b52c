"""Values are rendered with pinned settings on both sides, so a source and its restored copy print every value alike
whatever the database's or role's own defaults are; the pinned settings are recorded in the manifest."""

from chain_steps import execute, publish, restore
from conftest import admin_connection
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.postgres.fingerprint import STABLE_OUTPUT_SETTINGS
from pgbackup.postgres.target import tools_for_server


def capture_of(target, tmp_path) -> BackupCapture:
    num, version = target.server_version()
    return BackupCapture(target, tools_for_server(num), Compression(), local_dir=tmp_path / "local", prefix="database", server_version=version)


def alter_database(target, setting):
    conn = admin_connection()
    with conn.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{target.dbname}" SET {setting}')
    conn.close()


def test_the_pinned_settings_are_recorded_with_the_databases_encoding(make_database, tmp_path):
    source = make_database("settings")
    settings = capture_of(source, tmp_path).full().details["settings"]
    assert settings == {"client_encoding": "UTF8", **STABLE_OUTPUT_SETTINGS}
    assert settings["search_path"] == "pg_catalog" and settings["lc_monetary"] == "C"


def test_a_source_with_its_own_search_path_and_styles_restores_with_equal_fingerprints(make_database, tmp_path, client):
    """regclass values print schema-qualified only off the search_path; intervals and dates follow their styles."""
    source = make_database("ownpath")
    execute(source, "CREATE SCHEMA app", "CREATE TABLE app.ref (id int PRIMARY KEY, r regclass, i interval, x xml)",
            "INSERT INTO app.ref VALUES (1, 'app.ref', '1 day 2 hours', '<a>1</a>')")
    for setting in ("search_path = app", "IntervalStyle = 'iso_8601'", "xmloption = 'document'"):
        alter_database(source, setting)
    capture = capture_of(source, tmp_path)
    full = publish(capture.full(), client)
    restore(client, full.id, make_database)  # the restore check compares the fingerprints
    execute(source, "UPDATE app.ref SET i = '3 days' WHERE id = 1")
    inc = publish(capture.incremental(full), client)
    assert inc.kind == "incremental"
    restore(client, inc.id, make_database)
