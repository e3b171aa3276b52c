"""A capture needs no more of the server's lock table than pg_dump alone, and says what to raise when even that is short.

PostgreSQL's lock table holds ``max_locks_per_transaction × (max_connections +
max_prepared_transactions)`` locks for the whole server.  pg_dump locks every table; a
capture that also kept a lock on every table it read needed twice that, and failed with
"out of shared memory" on databases of thousands of tables that bare pg_dump backs up.
"""

import subprocess
import threading
from pathlib import Path

import psycopg2
import pytest

from chain_steps import execute
from pgbackup.capture import full as full_module
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.capture.dump import PgDump, pg_dump_failure
from pgbackup.capture.errors import translate_capture_error
from pgbackup.postgres.snapshot import TableRewritten
from pgbackup.postgres.target import tools_for_server
from private_cluster import PrivateCluster

PASSWORD = "locks-test-password"
# With max_locks_per_transaction = 10 and max_connections = 20 the lock table holds about 200 locks
# (plus PostgreSQL's slack): pg_dump's lock on each of these tables fits, twice as many do not.
TABLES = 400


@pytest.fixture(scope="module")
def small_lock_table():
    cluster = PrivateCluster(PASSWORD).start()
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=PASSWORD, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ALTER SYSTEM SET max_locks_per_transaction = 10")
            cur.execute("ALTER SYSTEM SET max_connections = 20")
        conn.close()
        cluster.pg_ctl("restart")
        target = cluster.target()
        for first in range(0, TABLES, 50):  # a transaction creating them all would need a lock on each
            execute(target, *(f"CREATE TABLE t{i} (id int PRIMARY KEY, v text); INSERT INTO t{i} VALUES (1, 'a')"
                              for i in range(first, first + 50)))
        yield cluster, target
    finally:
        cluster.stop()


def capture_of(target, tmp_path):
    num, version = target.server_version()
    return BackupCapture(target, tools_for_server(num), Compression(), local_dir=tmp_path, prefix="database", server_version=version)


def test_a_capture_of_more_tables_than_the_lock_table_holds_twice_succeeds(small_lock_table, tmp_path):
    cluster, target = small_lock_table
    num, _ = target.server_version()
    with target.libpq_env() as env:  # bare pg_dump backs this database up: the capture must too
        subprocess.run([tools_for_server(num).pg_dump, "-Fc", "-f", str(tmp_path / "bare.dump")], env=env, check=True)
    capture = capture_of(target, tmp_path)
    full = capture.full()
    assert len(full.details["fingerprints"]) == TABLES
    execute(target, "UPDATE t1 SET v = 'b'", "DELETE FROM t2")
    incremental = capture.incremental(full.manifest(verified_method="test"))
    assert incremental.kind == "incremental"
    assert incremental.details["captured"]["public.t2"]["deleted"] == 1


def test_postgresql_s_hint_is_kept_in_a_session_error():
    error = None
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_catalog.pg_sleep('a', 'b')")
    except psycopg2.Error as exc:
        error = exc
    finally:
        conn.close()
    message = str(translate_capture_error(error, Path("unused")))
    assert "does not exist" in message and "HINT: No function matches" in message


def test_pg_dump_s_hint_is_kept_beside_its_error():
    stderr = ("pg_dump: error: query failed: ERROR:  out of shared memory\n"
              "HINT:  You might need to increase max_locks_per_transaction.\n"
              "pg_dump: detail: Query was: LOCK TABLE public.t599 IN ACCESS SHARE MODE\n")
    assert pg_dump_failure(stderr) == ("pg_dump: error: query failed: ERROR:  out of shared memory "
                                       "HINT:  You might need to increase max_locks_per_transaction.")


def test_a_truncate_after_the_capture_read_a_table_but_before_pg_dump_locked_it_fails_the_full(shop_db, capture, monkeypatch):
    """The capture lets go of each table once read; pg_dump's own lock comes later, so the gap is checked once pg_dump holds them all."""
    described = threading.Event()
    read_row_state, run = full_module.read_row_state, PgDump.run

    def read_then_truncate(ctx, session, state):
        details = read_row_state(ctx, session, state)
        execute(shop_db, "SET lock_timeout = '20s'", "TRUNCATE payment")  # waits for no lock of the capture's
        described.set()
        return details

    def run_once_described(self, *args, **kwargs):
        assert described.wait(120)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(full_module, "read_row_state", read_then_truncate)
    monkeypatch.setattr(PgDump, "run", run_once_described)
    with pytest.raises(TableRewritten, match="payment"):
        capture.full()
