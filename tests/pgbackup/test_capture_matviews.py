"""Materialized views are listed, fingerprinted and checked; incrementals never carry them, so any change to one
takes a full backup.  PostgreSQL restores a materialized view by REFRESH: a stale one cannot restore equal."""

import pytest

from chain_steps import LAYOUT, execute, publish, restore
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.model.catalog import Catalog
from pgbackup.postgres.target import tools_for_server
from pgbackup.restore.chain import ChainRestore, RestoreError, choose_chain
from pgcompare import database_content


def capture_of(target, tmp_path) -> BackupCapture:
    num, version = target.server_version()
    return BackupCapture(target, tools_for_server(num), Compression(), local_dir=tmp_path / "local", prefix="database", server_version=version)


@pytest.fixture
def source(make_database):
    target = make_database("matview")
    execute(target, "CREATE TABLE item (id int PRIMARY KEY, n int)", "INSERT INTO item SELECT g, g FROM generate_series(1, 10) g",
            "CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS c, sum(n) AS s FROM item",
            "CREATE UNIQUE INDEX ON totals (c)")
    return target


def content(target):
    conn = target.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT c, s FROM totals")
        totals = cur.fetchall()
    conn.close()
    return database_content(target), totals


def test_a_materialized_view_is_listed_and_fingerprinted(source, tmp_path):
    full = capture_of(source, tmp_path).full()
    assert full.details["tables"]["public.totals"]["kind"] == "m"
    assert full.details["fingerprints"]["public.totals"]["rows"] == 1


def test_a_refreshed_materialized_view_promotes_to_a_full_and_restores_exactly(source, tmp_path, client, make_database):
    capture = capture_of(source, tmp_path)
    full = publish(capture.full(), client)
    execute(source, "INSERT INTO item VALUES (11, 11)", "REFRESH MATERIALIZED VIEW totals")
    captured = capture.incremental(full)
    assert captured.kind == "full" and "materialized view public.totals was refreshed" in captured.details["promoted_from_incremental"]
    assert content(restore(client, publish(captured, client).id, make_database)) == content(source)


def test_a_materialized_view_refreshed_concurrently_promotes_to_a_full(source, tmp_path, client, make_database):
    capture = capture_of(source, tmp_path)
    full = publish(capture.full(), client)
    execute(source, "INSERT INTO item VALUES (11, 11)")
    execute(source, "REFRESH MATERIALIZED VIEW CONCURRENTLY totals")
    captured = capture.incremental(full)
    assert captured.kind == "full" and "materialized view public.totals changed" in captured.details["promoted_from_incremental"]
    assert content(restore(client, publish(captured, client).id, make_database)) == content(source)


def test_an_unchanged_materialized_view_lets_an_incremental_through(source, tmp_path, client):
    capture = capture_of(source, tmp_path)
    full = publish(capture.full(), client)
    execute(source, "UPDATE item SET n = n WHERE id = 1")
    inc = capture.incremental(full)
    assert inc.kind == "incremental" and inc.details["fingerprints"]["public.totals"] == full.details["fingerprints"]["public.totals"]


def test_a_stale_materialized_view_fails_the_restore_check_saying_why(source, tmp_path, client, make_database):
    execute(source, "INSERT INTO item VALUES (11, 11)")  # totals not refreshed: stale
    full = publish(capture_of(source, tmp_path).full(), client)
    with pytest.raises(RestoreError, match="PostgreSQL restores a materialized view by REFRESH .* the source's was stale"):
        ChainRestore(client, LAYOUT).run(choose_chain(Catalog.load(client, LAYOUT), backup_id=full.id), make_database("restored"))


def test_a_materialized_view_never_populated_is_backed_up_and_restored(make_database, tmp_path, client):
    source = make_database("unpopulated")
    execute(source, "CREATE TABLE item (id int PRIMARY KEY)", "CREATE MATERIALIZED VIEW later AS SELECT count(*) FROM item WITH NO DATA")
    full = publish(capture_of(source, tmp_path).full(), client)
    assert full.details["fingerprints"]["public.later"] == {"rows": 0, "hash": "unpopulated"}
    restore(client, full.id, make_database)
