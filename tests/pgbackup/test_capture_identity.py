"""Relations are known by identity, not by name, and capture works for every shape of database: the restore is
exact or refuses.  Each test goes through the library as the DAG does (capture, publish, restore)."""

from chain_steps import execute, publish, restore
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.postgres.target import tools_for_server
from pgcompare import database_content


def capture_of(target, tmp_path) -> BackupCapture:
    num, version = target.server_version()
    return BackupCapture(target, tools_for_server(num), Compression(), local_dir=tmp_path / "local", prefix="database", server_version=version)


def test_a_full_backup_records_each_relations_identity_and_the_source(make_database, tmp_path, client):
    source = make_database("ident")
    execute(source, 'CREATE SCHEMA "Odd.Schema"', 'CREATE TABLE "Odd.Schema"."order" (id int PRIMARY KEY, v text)')
    full = capture_of(source, tmp_path).full()
    info = full.details["tables"]['"Odd.Schema"."order"']
    assert {k: info[k] for k in ("schema", "name", "kind", "key_columns")} == {"schema": "Odd.Schema", "name": "order", "kind": "r", "key_columns": ["id"]}
    assert info["oid"] > 0 and info["relfilenode"] > 0
    assert full.details["source"]["database"] == source.dbname and full.details["source"]["database_oid"] > 0
    assert '"Odd.Schema"."order"' in full.details["fingerprints"]


def test_two_tables_swapping_names_promote_to_a_full_and_restore_exactly(make_database, tmp_path, client):
    """Same definitions, same row counts, no row touched: only the OIDs tell that public.a is another table now."""
    source = make_database("swap")
    execute(source, "CREATE TABLE a (id int PRIMARY KEY, v text)", "CREATE TABLE b (id int PRIMARY KEY, v text)",
            "INSERT INTO a VALUES (1, 'a1'), (2, 'a2')", "INSERT INTO b VALUES (1, 'b1'), (2, 'b2')")
    capture = capture_of(source, tmp_path)
    full = publish(capture.full(), client)
    execute(source, "ALTER TABLE a RENAME TO tmp", "ALTER INDEX a_pkey RENAME TO tmp_pkey",
            "ALTER TABLE b RENAME TO a", "ALTER INDEX b_pkey RENAME TO a_pkey",
            "ALTER TABLE tmp RENAME TO b", "ALTER INDEX tmp_pkey RENAME TO b_pkey")
    captured = capture.incremental(full)
    assert captured.kind == "full"
    assert "public.a is not the relation the parent saw" in captured.details["promoted_from_incremental"]
    restored = restore(client, publish(captured, client).id, make_database)
    assert database_content(restored) == database_content(source)


def test_a_table_dropped_and_recreated_under_its_name_promotes_to_a_full(make_database, tmp_path, client):
    source = make_database("recreate")
    execute(source, "CREATE TABLE a (id int PRIMARY KEY, v text)", "INSERT INTO a VALUES (1, 'old'), (2, 'old')")
    capture = capture_of(source, tmp_path)
    full = publish(capture.full(), client)
    execute(source, "DROP TABLE a", "CREATE TABLE a (id int PRIMARY KEY, v text)", "INSERT INTO a VALUES (1, 'new'), (2, 'new')")
    captured = capture.incremental(full)
    assert captured.kind == "full" and "dropped and re-created" in captured.details["promoted_from_incremental"]


def test_a_parent_without_source_identity_or_oids_promotes_to_a_full(make_database, tmp_path, client):
    source = make_database("oldparent")
    execute(source, "CREATE TABLE a (id int PRIMARY KEY)")
    capture = capture_of(source, tmp_path)
    full = publish(capture.full(), client)
    old = type(full)(**{**full.__dict__, "details": {k: v for k, v in full.details.items() if k != "source"}})
    captured = capture.incremental(old)
    assert captured.kind == "full" and "made by an older version" in captured.details["promoted_from_incremental"]


def test_a_primary_key_with_include_columns_keys_rows_by_its_key_columns_only(make_database, tmp_path, client):
    source = make_database("include")
    execute(source, "CREATE TABLE item (id int, note text, qty int, PRIMARY KEY (id) INCLUDE (note))",
            "INSERT INTO item VALUES (1, NULL, 1), (2, 'x', 1), (3, NULL, 1)")
    capture = capture_of(source, tmp_path)
    full = publish(capture.full(), client)
    assert full.details["tables"]["public.item"]["key_columns"] == ["id"]
    execute(source, "UPDATE item SET qty = 2 WHERE id = 1", "UPDATE item SET note = 'y' WHERE id = 2", "DELETE FROM item WHERE id = 3")
    inc = publish(capture.incremental(full), client)
    assert inc.kind == "incremental" and inc.details["captured"]["public.item"] == {"mode": "rows", "upserted": 2, "deleted": 1}
    assert database_content(restore(client, inc.id, make_database)) == database_content(source)


def test_a_database_without_tables_is_backed_up_and_restored(make_database, tmp_path, client):
    source = make_database("empty")
    capture = capture_of(source, tmp_path)
    full = publish(capture.full(), client)
    assert full.details["tables"] == {} and full.details["fingerprints"] == {}
    inc = publish(capture.incremental(full), client)
    assert inc.kind == "incremental"
    assert database_content(restore(client, inc.id, make_database)) == database_content(source)


def test_a_database_whose_tables_all_lack_a_primary_key_is_backed_up_and_restored(make_database, tmp_path, client):
    source = make_database("nokeys")
    execute(source, "CREATE TABLE log (at int, line text)", "INSERT INTO log VALUES (1, 'a'), (2, 'b')")
    capture = capture_of(source, tmp_path)
    full = publish(capture.full(), client)
    execute(source, "INSERT INTO log VALUES (3, 'c')")
    inc = publish(capture.incremental(full), client)
    assert inc.kind == "incremental" and inc.details["captured"]["public.log"]["mode"] == "whole table"
    assert database_content(restore(client, full.id, make_database))["public.log"] == ["(1,a)", "(2,b)"]
    assert database_content(restore(client, inc.id, make_database)) == database_content(source)


def test_a_sequence_in_a_schema_whose_name_holds_a_dot_is_restored(make_database, tmp_path, client):
    source = make_database("dotseq")
    execute(source, 'CREATE SCHEMA "a.b"', 'CREATE TABLE "a.b".t (id int PRIMARY KEY)', 'CREATE SEQUENCE "a.b".s',
            "SELECT nextval('\"a.b\".s') FROM generate_series(1, 3)")
    full = publish(capture_of(source, tmp_path).full(), client)
    assert full.details["sequences"]['"a.b".s'] == {"schema": "a.b", "name": "s", "last_value": 3, "is_called": True}
    assert database_content(restore(client, full.id, make_database)) == database_content(source)


def test_a_table_without_columns_whose_row_count_changes_restores_exactly(make_database, tmp_path, client):
    source = make_database("nocols")
    execute(source, "CREATE TABLE z ()", "INSERT INTO z DEFAULT VALUES", "INSERT INTO z DEFAULT VALUES")
    capture = capture_of(source, tmp_path)
    full = publish(capture.full(), client)
    execute(source, "INSERT INTO z DEFAULT VALUES")
    inc = publish(capture.incremental(full), client)
    assert inc.kind == "incremental" and inc.details["captured"]["public.z"]["mode"] == "whole table"
    assert database_content(restore(client, inc.id, make_database)) == database_content(source)


def older_manifest_with_sequences(target, tmp_path, sequences):
    """A manifest as version 1 wrote it: no source identity, sequences keyed "schema.name" with [last_value, is_called]."""
    from dataclasses import replace

    manifest = capture_of(target, tmp_path).full().manifest(verified_method="test")
    details = {k: v for k, v in manifest.details.items() if k != "source"}
    return replace(manifest, details={**details, "sequences": sequences})


def sequence_value(target, name):
    conn = target.connect()
    with conn.cursor() as cur:
        cur.execute(f"SELECT last_value, is_called FROM {name}")
        value = cur.fetchone()
    conn.close()
    return value


def test_an_older_manifests_sequence_is_put_back_by_its_unquoted_name(make_database, tmp_path):
    from pgbackup.restore.chain import restore_sequences

    target = make_database("v1seq")
    execute(target, "CREATE SEQUENCE s")
    restore_sequences(target, older_manifest_with_sequences(target, tmp_path, {"public.s": [41, True]}))
    assert sequence_value(target, "public.s") == (41, True)


def test_an_older_manifests_ambiguous_sequence_name_is_refused(make_database, tmp_path):
    import pytest

    from pgbackup.restore.chain import RestoreError, restore_sequences

    target = make_database("v1amb")
    execute(target, 'CREATE SCHEMA "a.b"', 'CREATE SEQUENCE "a.b".c', "CREATE SCHEMA a", 'CREATE SEQUENCE a."b.c"')
    with pytest.raises(RestoreError, match=r"names sequence 'a.b.c', which matches 2 sequences of the target"):
        restore_sequences(target, older_manifest_with_sequences(target, tmp_path, {"a.b.c": [7, True]}))
