"""Large objects are fingerprinted and checked; incrementals never carry them, so a change takes a full backup.
A role that cannot read them fails the backup before pg_dump starts, saying what it needs."""

import uuid
from dataclasses import replace

import pytest

from chain_steps import execute, publish, restore
from conftest import admin_connection
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.capture.dump import PgDump
from pgbackup.capture.large_objects import LargeObjectsUnreadable
from pgbackup.postgres.target import tools_for_server
from pgbackup.restore.chain import RestoreError, check_restored


def capture_of(target, tmp_path) -> BackupCapture:
    num, version = target.server_version()
    return BackupCapture(target, tools_for_server(num), Compression(), local_dir=tmp_path / "local", prefix="database", server_version=version)


def large_objects(target):
    conn = target.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT oid::bigint, encode(lo_get(oid), 'escape') FROM pg_largeobject_metadata ORDER BY 1")
        found = cur.fetchall()
    conn.close()
    return found


@pytest.fixture
def source(make_database):
    target = make_database("lobs")
    execute(target, "CREATE TABLE doc (id int PRIMARY KEY, body oid)", "INSERT INTO doc VALUES (1, lo_from_bytea(0, 'first'))")
    return target


def test_large_objects_are_fingerprinted_and_a_change_promotes_to_a_full(source, tmp_path, client, make_database):
    capture = capture_of(source, tmp_path)
    full = publish(capture.full(), client)
    assert full.details["large_objects"]["count"] == 1
    execute(source, "SELECT lo_put(body, 0, 'FIRST') FROM doc")
    captured = capture.incremental(full)
    assert captured.kind == "full" and "large objects changed" in captured.details["promoted_from_incremental"]
    restored = restore(client, publish(captured, client).id, make_database)
    assert large_objects(restored) == large_objects(source)


def test_a_database_without_large_objects_records_none(make_database, tmp_path):
    source = make_database("nolobs")
    assert "large_objects" not in capture_of(source, tmp_path).full().details


def test_the_restore_check_catches_a_changed_large_object(source, tmp_path, client, make_database):
    full = publish(capture_of(source, tmp_path).full(), client)
    restored = restore(client, full.id, make_database)
    execute(restored, "SELECT lo_put(body, 0, 'x') FROM doc")
    with pytest.raises(RestoreError, match=f"restored large objects differ from backup {full.id}"):
        check_restored(restored, full)


@pytest.fixture
def reader(source):
    """A login role with pg_read_all_data on ``source`` (all tables, but not large objects, on PostgreSQL 15)."""
    role = f"pgb_reader_{uuid.uuid4().hex[:8]}"
    conn = admin_connection()
    with conn.cursor() as cur:
        cur.execute(f'CREATE ROLE "{role}" LOGIN')
        cur.execute(f'GRANT pg_read_all_data TO "{role}"')
        cur.execute(f'GRANT CONNECT ON DATABASE "{source.dbname}" TO "{role}"')
    yield replace(source, user=role)
    execute(source, f'DROP OWNED BY "{role}"')  # its grants on the large objects
    with conn.cursor() as cur:
        cur.execute(f'REVOKE ALL ON DATABASE "{source.dbname}" FROM "{role}"')
        cur.execute(f'DROP ROLE "{role}"')
    conn.close()


def test_a_role_that_cannot_read_the_large_objects_fails_before_pg_dump(reader, source, tmp_path, monkeypatch):
    monkeypatch.setattr(PgDump, "run", lambda *args, **kwargs: pytest.fail("pg_dump started"))
    with pytest.raises(LargeObjectsUnreadable, match=rf"role {reader.user} cannot read 1 large object\(s\) .* GRANT SELECT ON LARGE OBJECT"):
        capture_of(reader, tmp_path).full()
    assert not [p for p in (tmp_path / "local").rglob("*") if p.is_file()]


def test_a_role_granted_select_on_the_large_objects_backs_them_up(reader, source, tmp_path):
    execute(source, f'GRANT SELECT ON LARGE OBJECT {large_objects(source)[0][0]} TO "{reader.user}"')
    assert capture_of(reader, tmp_path).full().details["large_objects"]["count"] == 1
