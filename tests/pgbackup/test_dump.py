"""Dump → archive check → restore on the real PostgreSQL, compared table by table."""

import logging

import pytest

from pgbackup.capture.archive import check_archive
from pgbackup.capture.compression import Compression, CorruptArchiveError
from pgbackup.capture.dump import DumpError, PgDump
from pgbackup.postgres.target import PgTarget, tools_for_server
from pgbackup.restore.chain import ArchiveRestore
from pgcompare import library_fingerprints
from waiting import InThread, wait_for_lock_wait

log = logging.getLogger("test")


@pytest.fixture
def tools(shop_db):
    return tools_for_server(shop_db.server_version()[0])


def dump(shop_db, tools, out):
    return PgDump(shop_db, tools, Compression(level=3)).run(out)


def test_dump_restores_to_identical_tables_and_sequences(shop_db, tools, tmp_path, make_database):
    artifact = dump(shop_db, tools, tmp_path / "full.dump.zst")
    assert artifact.bytes < artifact.uncompressed_bytes
    target = make_database("restored")
    ArchiveRestore(tools).run(artifact.path, target, expected_uncompressed=artifact.uncompressed_bytes, jobs=2)
    source_tables, source_sequences = library_fingerprints(shop_db)
    restored_tables, restored_sequences = library_fingerprints(target)
    assert len(source_tables) >= 10 and all(f.rows > 0 for f in source_tables.values())
    assert restored_tables == source_tables
    assert restored_sequences == source_sequences


def test_sha256_is_the_hash_of_the_written_file(shop_db, tools, tmp_path):
    import hashlib

    artifact = dump(shop_db, tools, tmp_path / "full.dump.zst")
    data = (tmp_path / "full.dump.zst").read_bytes()
    assert artifact.sha256 == hashlib.sha256(data).hexdigest() and artifact.bytes == len(data)
    assert not list(tmp_path.glob("*.partial"))


def test_archive_check_reads_the_table_of_contents(shop_db, tools, tmp_path):
    artifact = dump(shop_db, tools, tmp_path / "full.dump.zst")
    check = check_archive(artifact.path, tools, expected_uncompressed=artifact.uncompressed_bytes)
    assert check.table_data_entries >= 10 and check.uncompressed_bytes == artifact.uncompressed_bytes


def test_an_empty_table_of_contents_passes_only_for_a_database_with_nothing_in_it(make_database, tools, tmp_path):
    """A first deploy backs up a shop database before its schema is loaded: pg_dump lists nothing, and that is whole."""
    empty = make_database("empty")
    artifact = dump(empty, tools, tmp_path / "full.dump.zst")
    with pytest.raises(CorruptArchiveError, match="empty table of contents"):
        check_archive(artifact.path, tools, expected_uncompressed=artifact.uncompressed_bytes)
    check = check_archive(artifact.path, tools, expected_uncompressed=artifact.uncompressed_bytes, may_be_empty=True)
    assert check.toc_entries == 0 and check.uncompressed_bytes == artifact.uncompressed_bytes


def test_archive_check_fails_on_a_flipped_byte(shop_db, tools, tmp_path):
    artifact = dump(shop_db, tools, tmp_path / "full.dump.zst")
    data = bytearray((tmp_path / "full.dump.zst").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "full.dump.zst").write_bytes(bytes(data))
    with pytest.raises(CorruptArchiveError):
        check_archive(artifact.path, tools, expected_uncompressed=artifact.uncompressed_bytes)


def test_archive_check_fails_on_a_truncated_file(shop_db, tools, tmp_path):
    artifact = dump(shop_db, tools, tmp_path / "full.dump.zst")
    data = (tmp_path / "full.dump.zst").read_bytes()
    (tmp_path / "full.dump.zst").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArchiveError):
        check_archive(artifact.path, tools, expected_uncompressed=artifact.uncompressed_bytes)


def test_a_failing_pg_dump_leaves_no_file(tools, tmp_path):
    missing = PgTarget(dbname="pgb_does_not_exist")
    with pytest.raises(DumpError, match="pg_dump of postgres@127.0.0.1:5432/pgb_does_not_exist failed"):
        PgDump(missing, tools, Compression()).run(tmp_path / "x.dump.zst")
    assert list(tmp_path.iterdir()) == []


def test_terminate_stops_pg_dump_and_removes_the_partial_file(shop_db, tools, tmp_path):
    # Hold a lock pg_dump must wait for, so the dump is still running when it is killed.
    blocker = shop_db.connect()
    blocker.cursor().execute('LOCK TABLE "order" IN ACCESS EXCLUSIVE MODE')
    run = PgDump(shop_db, tools, Compression())
    worker = InThread(run.run, tmp_path / "x.dump.zst")
    try:
        wait_for_lock_wait(shop_db.dbname)
        run.terminate()
        outcome = worker.outcome(timeout=30)
    finally:
        blocker.rollback()
        blocker.close()
    assert isinstance(outcome, DumpError)
    assert list(tmp_path.iterdir()) == []
