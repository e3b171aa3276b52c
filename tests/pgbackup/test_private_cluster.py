"""Against a private cluster that requires passwords and can be restarted: a wrong password is one clear line,
and a server restart in the middle of a backup fails it cleanly."""

import secrets

import pytest

from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.capture.dump import DumpError
from pgbackup.postgres.target import SourceError, tools_for_server
from private_cluster import running_cluster
from sample_shop import seed_sample_shop
from waiting import InThread, wait_for_lock_wait

PASSWORD = secrets.token_urlsafe(16)  # a private throwaway cluster: never a fixed password in the repo


@pytest.fixture(scope="module")
def cluster():
    yield from running_cluster(PASSWORD)


def test_a_wrong_password_is_one_clear_line_without_the_password(cluster):
    with pytest.raises(SourceError) as err:
        cluster.target(password="not-the-password").server_version()
    message = str(err.value)
    assert message.startswith("cannot connect to postgres@127.0.0.1:") and "password authentication failed" in message
    assert "not-the-password" not in message and PASSWORD not in message


def test_pg_dump_reads_the_password_from_the_private_passfile(cluster, tmp_path):
    target = cluster.target()
    admin = target.connect()
    admin.autocommit = True
    admin.cursor().execute("DROP DATABASE IF EXISTS shop")
    admin.cursor().execute("CREATE DATABASE shop")
    admin.close()
    shop = cluster.target("shop")
    conn = shop.connect()
    seed_sample_shop(conn, scale=2)
    conn.close()
    num, version = shop.server_version()
    captured = BackupCapture(shop, tools_for_server(num), Compression(level=1), local_dir=tmp_path, prefix="database", server_version=version).full()
    assert captured.bytes > 0

    # a restart in the middle of the next backup: the capture fails, nothing is left behind
    capture = BackupCapture(shop, tools_for_server(num), Compression(level=1), local_dir=tmp_path / "second", prefix="database", server_version=version)
    blocker = shop.connect()
    blocker.cursor().execute('LOCK TABLE "order" IN ACCESS EXCLUSIVE MODE')  # keeps pg_dump busy until the restart
    worker = InThread(capture.full)
    wait_for_lock_wait("shop", connect=shop.connect)
    cluster.restart()
    outcome = worker.outcome(timeout=60)
    assert isinstance(outcome, DumpError), outcome
    leftovers = [p for p in (tmp_path / "second").rglob("*") if p.is_file()] if (tmp_path / "second").exists() else []
    assert leftovers == []

