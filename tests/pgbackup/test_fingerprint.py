"""Fingerprints read on several connections sharing one snapshot equal one transaction's, and the restore check
that uses them still catches a single changed row."""

import pytest
from pgbackup.fingerprint import sequence_values, snapshot_fingerprints, table_fingerprints
from pgbackup.restore import RestoreError, check_restored
from chain_steps import execute, publish, restore


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
