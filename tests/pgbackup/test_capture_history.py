"""An incremental builds on its parent only over one continuous history of the source.  A source put back from a
file copy, failed over or recovered to a point in time reuses transaction ids: rows written then can carry ids
below the parent's snapshot, and an incremental that trusted xmin would silently miss them."""

import secrets

import pytest

from chain_steps import execute, publish, restore
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.capture.promotion import continuity_reason
from pgbackup.postgres.snapshot import SnapshotInfo
from pgbackup.postgres.target import tools_for_server
from pgcompare import database_content
from private_cluster import running_cluster

PASSWORD = secrets.token_urlsafe(16)  # a private throwaway cluster: never a fixed password in the repo


@pytest.fixture
def cluster():
    yield from running_cluster(PASSWORD)


def snapshot_info(**changes) -> SnapshotInfo:
    values = {"exported_id": "x", "pg_snapshot": "1000:1000:", "xmin": 1000, "xmax": 1000, "taken_at": "t",
              "system_identifier": "7", "timeline": 1, "wal_lsn": "0/5000000"}
    return SnapshotInfo(**{**values, **changes})


PARENT = snapshot_info().to_dict()


def test_a_snapshot_on_another_timeline_is_not_a_continuation():
    assert "timeline 2" in continuity_reason(PARENT, snapshot_info(timeline=2, xmax=2000))


def test_a_wal_position_behind_the_parents_is_not_a_continuation():
    assert "WAL position 0/4FFFFFF is behind the parent's 0/5000000" in continuity_reason(PARENT, snapshot_info(wal_lsn="0/4FFFFFF", xmax=2000))


def test_the_same_timeline_and_a_later_wal_position_continue():
    assert continuity_reason(PARENT, snapshot_info(wal_lsn="1/0", xmax=2000)) is None


def test_the_snapshot_records_timeline_and_wal_position(shop_db, capture):
    snapshot = capture.full().details["snapshot"]
    assert snapshot["timeline"] >= 1 and "/" in snapshot["wal_lsn"]


def test_a_source_put_back_from_a_file_copy_promotes_to_a_full(cluster, tmp_path, client, make_database):
    admin = cluster.target()
    execute_autocommit(admin, "CREATE DATABASE shop")
    source = cluster.target("shop")
    execute(source, "CREATE TABLE item (id int PRIMARY KEY, v text)", "INSERT INTO item SELECT g, 'base' FROM generate_series(1, 10) g")
    num, version = source.server_version()
    capture = BackupCapture(source, tools_for_server(num), Compression(level=1), local_dir=tmp_path / "local", prefix="database",
                            server_version=version)
    full = publish(capture.full(), client)

    cluster.pg_ctl("stop")
    copy = cluster.dir / "copy"
    cluster._as_postgres("cp", "-a", str(cluster.data), str(copy))
    cluster.pg_ctl("start")
    execute(source, "INSERT INTO item VALUES (11, 'lost with the copy')")
    burn_transactions(source, 20)
    execute_autocommit(admin, "SELECT pg_switch_wal()")  # the history the copy will not have is 16 MB of WAL
    first = publish(capture.incremental(full), client)
    assert first.kind == "incremental"

    cluster.pg_ctl("stop")
    cluster._as_postgres("rm", "-rf", str(cluster.data))
    cluster._as_postgres("mv", str(copy), str(cluster.data))
    cluster.pg_ctl("start")
    execute(source, "INSERT INTO item VALUES (12, 'after the copy came back')")  # a transaction id below the parent's snapshot
    while current_xid(source) < first.details["snapshot"]["xmax"]:
        burn_transactions(source, 10)  # transaction ids catch up with the parent's; the WAL position does not
    captured = capture.incremental(first)
    assert captured.kind == "full", "an incremental here would miss row 12 and keep row 11"
    assert "restored from a copy" in captured.details["promoted_from_incremental"]
    restored = restore(client, publish(captured, client).id, make_database)
    assert database_content(restored) == database_content(source)


def execute_autocommit(target, statement):
    conn = target.connect()
    conn.autocommit = True
    conn.cursor().execute(statement)
    conn.close()


def burn_transactions(target, count):
    conn = target.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        for _ in range(count):
            cur.execute("SELECT txid_current()")
    conn.close()


def current_xid(target):
    conn = target.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT txid_current()")
        xid = cur.fetchone()[0]
    conn.close()
    return xid
