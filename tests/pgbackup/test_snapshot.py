"""The capture session: one exported snapshot, and tables that cannot be truncated or rewritten under it."""


import psycopg2
import psycopg2.errors
import pytest
from pgbackup.snapshot import SnapshotSession


def test_truncate_waits_until_the_capture_session_is_closed(shop_db):
    """TRUNCATE is not MVCC-safe: committed after the snapshot, the snapshot would see the table empty."""
    session = SnapshotSession(shop_db)
    conn = shop_db.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '300ms'")
            with pytest.raises(psycopg2.errors.LockNotAvailable):
                cur.execute("TRUNCATE payment")
            with pytest.raises(psycopg2.errors.LockNotAvailable):
                cur.execute("ALTER TABLE customer ADD COLUMN note text")
            cur.execute("INSERT INTO setting (key, value, revision, updated_at) VALUES ('during', '1', 1, now())")  # writes go on
    finally:
        session.close()
    with conn.cursor() as cur:
        cur.execute("TRUNCATE payment")  # once the capture is over
    conn.close()
