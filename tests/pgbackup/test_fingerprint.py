"""Fingerprints read on several connections sharing one snapshot equal one transaction's, and the restore check
that uses them still catches a single changed row."""

import pytest

from chain_steps import execute, publish, restore
from pgbackup.postgres.fingerprint import (
    sequence_values,
    snapshot_fingerprints,
    table_fingerprints,
)
from pgbackup.restore.chain import RestoreError, check_restored


def test_fingerprints_on_several_connections_equal_one_transaction(shop_db):
    conn = shop_db.connect()
    try:
        expected = table_fingerprints(conn), sequence_values(conn)
    finally:
        conn.close()
    for jobs in (1, 3):
        assert snapshot_fingerprints(shop_db, jobs=jobs) == expected


def test_parallel_restore_check_catches_one_changed_row(shop_db, capture, client, make_database):  # noqa: F811
    full = publish(capture.full(), client)
    restored = restore(client, full.id, make_database)
    assert check_restored(restored, full, jobs=4)[0] == len(full.details["fingerprints"])
    execute(restored, "UPDATE product SET name = name || '.' WHERE id = (SELECT min(id) FROM product)")
    with pytest.raises(RestoreError, match=r"differs from backup .* in 1 table\(s\): public.product"):
        check_restored(restored, full, jobs=4)


def test_a_version_1_manifest_is_checked_under_its_unquoted_keys(make_database, tmp_path, client):
    """Version 1 keyed relations "schema.name" unquoted (public.order) and sequences [last_value, is_called]."""
    from dataclasses import replace

    from pgbackup.capture.capture import BackupCapture
    from pgbackup.capture.compression import Compression
    from pgbackup.postgres.target import tools_for_server

    source = make_database("v1check")
    execute(source, 'CREATE TABLE "order" (id serial PRIMARY KEY, v text)', "INSERT INTO \"order\" (v) VALUES ('a'), ('b')")
    num, version = source.server_version()
    full = publish(BackupCapture(source, tools_for_server(num), Compression(), local_dir=tmp_path / "local", prefix="database",
                                 server_version=version).full(), client)
    details = full.details
    old = replace(full, details={
        "snapshot": details["snapshot"], "schema_sha256": details["schema_sha256"],
        "fingerprints": {"public.order": details["fingerprints"]['public."order"']},
        "sequences": {"public.order_id_seq": [2, True]},
        "tables": {"public.order": {"key_columns": ["id"]}},
    })
    restored = restore(client, full.id, make_database)
    assert check_restored(restored, old) == (1, 2)
    execute(restored, "UPDATE \"order\" SET v = 'changed' WHERE id = 1")
    with pytest.raises(RestoreError, match="public.order"):
        check_restored(restored, old)
