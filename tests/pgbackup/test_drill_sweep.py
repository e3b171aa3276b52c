"""A drill killed mid-restore leaves its scratch database behind; the next drill drops it — and only such orphans.

A running drill holds an advisory lock named after its scratch database for as
long as it runs; the sweep at the start of every drill drops a scratch database
only when that lock is free and no session is connected to it.
"""

import os
import signal
import subprocess
import sys

import pytest

from conftest import PG_SERVER_URL, admin_connection
from pgbackup.postgres.target import PgTarget
from pgbackup.restore.drill import RestoreDrill
from rclone_provider.client import Rclone
from restore_helpers import LAYOUT, back_up_chain, database_exists, database_with, query

pytestmark = pytest.mark.integration  # creates and drops databases on the test server

SERVER = PgTarget.from_url(f"{PG_SERVER_URL}/postgres")

# A drill in a process of its own that stops, before pg_restore's post-data section, until it is killed.
PAUSED_DRILL = """
import sys
from pgbackup.postgres.target import PgTarget
from pgbackup.model.layout import BackupLayout
from pgbackup.restore import chain
from pgbackup.restore.drill import RestoreDrill
from rclone_provider.client import Rclone, RemoteConfig

restore = chain.ArchiveRestore._pg_restore

def paused_before_post_data(self, path, target, *sections, **kwargs):
    if "post-data" in sections:
        print("paused", target.dbname, flush=True)
        sys.stdin.read()  # until killed
    return restore(self, path, target, *sections, **kwargs)

chain.ArchiveRestore._pg_restore = paused_before_post_data
remote = Rclone(RemoteConfig.from_extra("backup_remote", {"type": "local", "root": sys.argv[2]}))
RestoreDrill(remote, BackupLayout("database"), PgTarget.from_url(sys.argv[1])).run(jobs=1)
"""


def sessions_on(name: str) -> int:
    return query(SERVER, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", name)[0][0]


def drill_lock_held(name: str) -> bool:
    return query(SERVER, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = "
                 "(hashtextextended(%s, 0) & 4294967295)::oid", name)[0][0] > 0


def wait_until(condition, what: str, attempts: int = 600):
    """Poll ``condition`` (an observable state of the server) until it holds; the server takes a moment to end a session."""
    for _ in range(attempts):
        if condition():
            return
        query(SERVER, "SELECT pg_stat_clear_snapshot()")  # one round trip between looks, no sleep
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def backed_up(make_database, local_remote, tmp_path):
    source = database_with(make_database, "CREATE TABLE note (id integer PRIMARY KEY, body text)",
                           "INSERT INTO note SELECT g, 'note ' || g FROM generate_series(1, 100) g")
    return back_up_chain(source, local_remote, tmp_path / "local")


@pytest.fixture
def drop_afterwards():
    names = []
    yield names.append
    conn = admin_connection()
    with conn.cursor() as cur:
        for name in names:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def test_the_next_drill_drops_the_scratch_database_a_killed_drill_left(backed_up, local_remote, drop_afterwards):
    killed = subprocess.Popen([sys.executable, "-c", PAUSED_DRILL, f"{PG_SERVER_URL}/postgres", local_remote.root],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = killed.stdout.readline().split()
        assert line[:1] == ["paused"], line
        leftover = line[1]
        drop_afterwards(leftover)
        assert query(PgTarget.from_url(f"{PG_SERVER_URL}/{leftover}"), "SELECT count(*) FROM note") == [(100,)]  # mid-restore
    finally:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
    wait_until(lambda: sessions_on(leftover) == 0 and not drill_lock_held(leftover), "the killed drill's sessions to end")
    assert database_exists(leftover)

    result = RestoreDrill(Rclone(local_remote), LAYOUT, SERVER).run(jobs=1)
    assert result.ok, result.error
    assert not database_exists(leftover)
    assert not database_exists(result.scratch_database)


def test_the_sweep_keeps_a_running_drills_scratch_one_in_use_and_any_other_database(local_remote, drop_afterwards):
    running, in_use, orphan = (f"pgbackup_drill_20260101000000_{suffix}" for suffix in ("0000aaaa", "0000bbbb", "0000cccc"))
    other = "pgbackup_drill_mine"
    conn = admin_connection()
    with conn.cursor() as cur:
        for name in (running, in_use, orphan, other):
            drop_afterwards(name)
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    holder = SERVER.connect()
    holder.autocommit = True
    holder.cursor().execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (running,))
    session = PgTarget.from_url(f"{PG_SERVER_URL}/{in_use}").connect()
    try:
        swept = RestoreDrill(Rclone(local_remote), LAYOUT, SERVER).sweep_orphaned_scratch()
    finally:
        session.close()
        holder.close()
    assert orphan in swept and not {running, in_use, other} & set(swept)
    assert [database_exists(n) for n in (running, in_use, orphan, other)] == [True, True, False, True]
