"""The check of a restored full runs beside pg_restore's post-data section, and still refuses a target that is not the backup.

``ChainRestore`` fingerprints each table once the data section is in, while the
indexes and constraints are built.  Two windows follow from that, and both must
refuse: a table damaged after its data was loaded but before it was read (the
fingerprint differs), and a table written after it was read, while post-data
still ran (the count of the transactions that wrote its rows differs).
"""

from pathlib import Path

import pytest

from chain_steps import execute
from conftest import admin_connection
from pgbackup.postgres.fingerprint import pin_output_settings, table_fingerprint
from pgbackup.postgres.tables import list_tables
from pgbackup.postgres.target import tools_for_server
from pgbackup.restore.chain import ArchiveRestore, ChainRestore, RestoreError
from pgbackup.restore.check import RestoreCheck, fingerprint_and_writers
from rclone_provider.client import Rclone
from restore_helpers import LAYOUT, back_up_chain, database_with, query, scratch_names, target_named

scratch_name = pytest.fixture(scratch_names, name="scratch_name")

SCHEMA = (
    "CREATE TABLE note (id integer PRIMARY KEY, body text NOT NULL)",
    "INSERT INTO note SELECT g, 'note ' || g FROM generate_series(1, 50) g",
    "CREATE TABLE tag (note_id integer REFERENCES note, label text)",
    "INSERT INTO tag SELECT g, 'tag ' || g FROM generate_series(1, 50) g",
    "CREATE INDEX tag_label ON tag (label)",
)


@pytest.fixture
def full(make_database, local_remote, tmp_path):
    source = database_with(make_database, *SCHEMA)
    return back_up_chain(source, local_remote, tmp_path / "local")


def restore(full, local_remote, scratch_name, jobs=2):
    target = target_named(scratch_name())
    return target, ChainRestore(Rclone(local_remote), LAYOUT).run(full, target, jobs=jobs)


def around_the_table_check(monkeypatch, *, before=(), after=()):
    """Run ``before`` on the target just before the tables are fingerprinted, ``after`` just after (post-data may still run)."""
    check_tables = RestoreCheck.check_tables

    def with_writes(self):
        execute(self.target, *before) if before else None
        check_tables(self)
        execute(self.target, *after) if after else None

    monkeypatch.setattr(RestoreCheck, "check_tables", with_writes)


def test_a_full_restores_with_its_tables_checked_beside_post_data(full, local_remote, scratch_name, monkeypatch):
    seen = {}
    check_tables = RestoreCheck.check_tables

    def noting_what_is_in(self):
        seen["rows"] = query(self.target, "SELECT count(*) FROM note")[0][0]
        check_tables(self)

    monkeypatch.setattr(RestoreCheck, "check_tables", noting_what_is_in)
    target, report = restore(full, local_remote, scratch_name)
    assert seen == {"rows": 50}  # called once the data section is in
    assert (report.tables, report.rows) == (2, 100)
    assert query(target, "SELECT count(*) FROM pg_indexes WHERE tablename IN ('note', 'tag')")[0][0] == 2


def test_a_table_damaged_between_its_data_and_its_check_is_refused(full, local_remote, scratch_name, monkeypatch):
    around_the_table_check(monkeypatch, before=("UPDATE note SET body = 'damaged' WHERE id = 7",))
    with pytest.raises(RestoreError, match=r"restored data differs from backup .* in 1 table\(s\): public\.note"):
        restore(full, local_remote, scratch_name)


@pytest.mark.parametrize("write", [
    "UPDATE note SET body = 'changed later' WHERE id = 7",
    "DELETE FROM tag WHERE note_id = 7",
    "INSERT INTO tag VALUES (7, 'added later')",
])
def test_a_table_written_after_its_check_while_post_data_runs_is_refused(full, local_remote, scratch_name, monkeypatch, write):
    around_the_table_check(monkeypatch, after=(write,))
    with pytest.raises(RestoreError, match=r"restored table\(s\) public\.(note|tag) were written after their fingerprint was checked"):
        restore(full, local_remote, scratch_name)


def test_with_no_connection_to_spare_the_check_runs_after_post_data(full, local_remote, scratch_name):
    target = target_named(scratch_name())
    indexes_when_checked = []

    def check():
        indexes_when_checked.append(query(target, "SELECT count(*) FROM pg_indexes WHERE tablename IN ('note', 'tag')")[0][0])

    conn = admin_connection()
    conn.cursor().execute(f'CREATE DATABASE "{target.dbname}"')
    conn.close()
    archive = Path(local_remote.root, full[0].artifact.path)
    num, _ = target.server_version()
    ArchiveRestore(tools_for_server(num)).run(archive, target, expected_uncompressed=full[0].uncompressed_bytes, jobs=2,
                                               after_data=check, beside_post_data=False)
    assert indexes_when_checked == [2]


def test_the_checks_one_scan_fingerprint_is_the_capture_fingerprint_of_every_table(shop_db):
    conn = shop_db.connect()
    try:
        with conn.cursor() as cur:
            pin_output_settings(cur)
            tables = list_tables(cur, kinds=("r",))
            found = {t.qualified: fingerprint_and_writers(cur, t) for t in tables}
            assert {k: f for k, (f, _) in found.items()} == {t.qualified: table_fingerprint(cur, t.schema, t.name) for t in tables}
            assert all(sum(writers.values()) == f.rows for f, writers in found.values())
    finally:
        conn.close()
