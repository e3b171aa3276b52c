"""Tables whose shape the incremental's sections must not trip over, restored through ``backupctl restore``."""

import pytest

from pgcompare import database_content
from restore_helpers import back_up_chain, database_with, restore_newest, scratch_names

scratch_name = pytest.fixture(scratch_names, name="scratch_name")


def test_a_primary_key_on_a_stored_generated_column_is_updated_and_deleted_exactly(make_database, local_remote, tmp_path, scratch_name):
    source = database_with(
        make_database,
        "CREATE TABLE pair (a integer NOT NULL, b integer NOT NULL, "
        "k text GENERATED ALWAYS AS (a::text || '-' || b::text) STORED PRIMARY KEY, note text)",
        "INSERT INTO pair (a, b, note) SELECT g, g % 3, 'row ' || g FROM generate_series(1, 30) g",
    )
    back_up_chain(source, local_remote, tmp_path / "local", (
        "UPDATE pair SET note = note || ' (changed)' WHERE a <= 4",
        "DELETE FROM pair WHERE a BETWEEN 10 AND 12",
        "INSERT INTO pair (a, b, note) VALUES (100, 1, 'new')",
    ))
    restored = restore_newest(local_remote, scratch_name)
    assert database_content(restored) == database_content(source)


def test_a_table_without_columns_whose_row_count_changes_is_restored(make_database, local_remote, tmp_path, scratch_name):
    # (A keyed table beside it: a capture of only keyless tables writes no row-key state to chain on.)
    source = database_with(make_database, "CREATE TABLE marker ()", "INSERT INTO marker DEFAULT VALUES", "INSERT INTO marker DEFAULT VALUES",
                           "CREATE TABLE keyed (id integer PRIMARY KEY)", "INSERT INTO keyed VALUES (1)")
    back_up_chain(source, local_remote, tmp_path / "local",
                  ("INSERT INTO marker DEFAULT VALUES", "INSERT INTO marker DEFAULT VALUES"),
                  ("DELETE FROM marker WHERE ctid = (SELECT min(ctid) FROM marker)",))
    restored = restore_newest(local_remote, scratch_name)
    assert database_content(restored) == database_content(source)
    assert database_content(restored)["public.marker"] == ["()"] * 3
