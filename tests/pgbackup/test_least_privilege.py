"""Backups work with a role that can only read (pg_read_all_data, PostgreSQL 14+); restore needs rights on the target only."""

import uuid
from dataclasses import replace

import pytest

from conftest import admin_connection
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.postgres.target import tools_for_server
from pgbackup.restore.chain import ArchiveRestore
from pgcompare import database_content
from sample_shop import mutate_sample_shop


@pytest.fixture
def reader(shop_db):
    role = f"pgb_reader_{uuid.uuid4().hex[:8]}"
    conn = admin_connection()
    with conn.cursor() as cur:
        cur.execute(f'CREATE ROLE "{role}" LOGIN')
        cur.execute(f'GRANT pg_read_all_data TO "{role}"')
        cur.execute(f'GRANT CONNECT ON DATABASE "{shop_db.dbname}" TO "{role}"')
    yield replace(shop_db, user=role)
    with conn.cursor() as cur:
        cur.execute(f'REVOKE ALL ON DATABASE "{shop_db.dbname}" FROM "{role}"')
        cur.execute(f'DROP ROLE "{role}"')
    conn.close()


def test_a_read_only_role_takes_full_and_incremental_backups(reader, shop_db, tmp_path, make_database):
    conn = reader.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone()[0] is False
        with pytest.raises(Exception, match="permission denied"):
            cur.execute("INSERT INTO setting (key, value, revision, updated_at) VALUES ('x', '{}', 1, now())")
    conn.close()
    num, version = reader.server_version()
    capture = BackupCapture(reader, tools_for_server(num), Compression(), local_dir=tmp_path, prefix="database", server_version=version)
    full = capture.full()
    parent = full.manifest(verified_method="test")
    writer = shop_db.connect()
    mutate_sample_shop(writer, 0.02, 8)
    writer.close()
    inc = capture.incremental(parent)
    assert inc.kind == "incremental" and inc.details["captured"]['public."order"']["mode"] == "rows"
    target = make_database("from_reader")
    ArchiveRestore(tools_for_server(num)).run(full.path, target, expected_uncompressed=full.uncompressed_bytes)
    assert set(database_content(target)) == set(database_content(shop_db))
