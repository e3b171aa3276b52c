"""A restore keeps the source's encoding and locale: it creates a missing target alike, and refuses an existing one that differs."""

import pytest

from chain_steps import execute
from conftest import admin_connection
from restore_helpers import (
    back_up_chain,
    backupctl,
    query,
    scratch_names,
    target_named,
    url_of,
)

scratch_name = pytest.fixture(scratch_names, name="scratch_name")

VALUES = ("café", "Straße", "¤ 5")


def latin1_source(scratch_name, values=VALUES):
    name = scratch_name("latin1")
    conn = admin_connection()
    conn.cursor().execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'")
    conn.close()
    source = target_named(name)
    execute(source, "CREATE TABLE word (id integer PRIMARY KEY, text text NOT NULL)",
            *(f"INSERT INTO word VALUES ({i}, '{v}')" for i, v in enumerate(values, 1)))
    return source


def stored_bytes(target) -> list:
    """Each value as the bytes the database stores (LATIN1 to LATIN1 is no conversion at all)."""
    return query(target, "SELECT id, encode(convert_to(text, 'LATIN1'), 'hex') FROM word ORDER BY id")


def database_locale(dbname: str) -> tuple:
    conn = admin_connection()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s", (dbname,))
        found = cur.fetchone()
    conn.close()
    return found


def test_a_new_target_gets_the_source_encoding_and_the_same_bytes(scratch_name, local_remote, tmp_path):
    source = latin1_source(scratch_name)
    back_up_chain(source, local_remote, tmp_path / "local", ("INSERT INTO word VALUES (4, 'déjà vu ß')", "UPDATE word SET text = text || ' é' WHERE id = 1"))
    name = scratch_name()
    # An operator's shell set to UTF8 must not change how the incremental's LATIN1 rows are read.
    result = backupctl(local_remote, "restore", "--to", url_of(name), PGCLIENTENCODING="UTF8")
    assert result.returncode == 0, result.stderr
    assert database_locale(name) == ("LATIN1", "C", "C")
    assert stored_bytes(target_named(name)) == stored_bytes(source)
    assert stored_bytes(source)[1] == (2, "53747261df65")  # "Straße": ß is the one byte df


def test_an_existing_target_of_another_encoding_is_refused_untouched(scratch_name, local_remote, tmp_path, make_database):
    source = latin1_source(scratch_name)
    back_up_chain(source, local_remote, tmp_path / "local")
    target = make_database("utf8")
    assert database_locale(target.dbname)[0] == "UTF8"
    result = backupctl(local_remote, "restore", "--to", url_of(target.dbname))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("backupctl: error: target database") and "encoding UTF8 where the backup has LATIN1" in lines[-1]
    assert "--allow-encoding-change" in lines[-1]
    conn = target.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")
        assert cur.fetchone()[0] == 0
    conn.close()


def test_allow_encoding_change_restores_into_an_existing_target_of_another_encoding(scratch_name, local_remote, tmp_path, make_database):
    source = latin1_source(scratch_name, values=("plain", "ascii"))
    back_up_chain(source, local_remote, tmp_path / "local", ("INSERT INTO word VALUES (3, 'more')",))
    target = make_database("utf8")
    result = backupctl(local_remote, "restore", "--to", url_of(target.dbname), "--allow-encoding-change")
    assert result.returncode == 0, result.stderr
    assert database_locale(target.dbname)[0] == "UTF8"
    assert stored_bytes(target) == stored_bytes(source)


def test_non_ascii_names_in_a_latin1_source_back_up_and_restore_exactly(scratch_name, local_remote, tmp_path):
    """Table, column, schema and sequence names outside ASCII, in a LATIN1 database: full, incremental, exact restore.

    psycopg2's own identifier quoting garbles such names on a non-UTF8 connection
    (``ü`` becomes ``Ã¼``, a relation that does not exist); every backup then failed.
    """
    source = latin1_source(scratch_name)
    execute(source, 'CREATE SCHEMA "Schéma"',
            'CREATE TABLE "Schéma"."ünï cødé" (id serial PRIMARY KEY, "Wert ü" text)',
            """INSERT INTO "Schéma"."ünï cødé" ("Wert ü") VALUES ('é'), ('ß')""")
    back_up_chain(source, local_remote, tmp_path / "local",
                  ("""INSERT INTO "Schéma"."ünï cødé" ("Wert ü") VALUES ('¤')""",
                   """UPDATE "Schéma"."ünï cødé" SET "Wert ü" = 'ä' WHERE id = 1""",
                   """DELETE FROM "Schéma"."ünï cødé" WHERE id = 2"""))
    name = scratch_name()
    result = backupctl(local_remote, "restore", "--to", url_of(name))
    assert result.returncode == 0, result.stderr

    def rows(target):
        conn = target.connect()
        with conn.cursor() as cur:
            cur.execute('SELECT id, encode(convert_to("Wert ü", \'LATIN1\'), \'hex\') FROM "Schéma"."ünï cødé" ORDER BY id')
            found = cur.fetchall()
            cur.execute('SELECT last_value FROM "Schéma"."ünï cødé_id_seq"')
            found.append(cur.fetchone())
        conn.close()
        return found

    assert rows(target_named(name)) == rows(source) == [(1, "e4"), (3, "a4"), (3,)]
