"""`backupctl restore` as an operator uses it in a disaster: no Airflow, only the remote and the connection variable.

The helpers here (a chain of real backups of a small database, ``backupctl`` run
as a subprocess, scratch database names) serve the other ``test_restore_*`` and
``test_apply_*`` files too.
"""

import json
import os
import subprocess
import sys
import uuid

import pytest

from chain_steps import execute
from conftest import PG_SERVER_URL, PROJECT, admin_connection
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.model.layout import BackupLayout
from pgbackup.postgres.snapshot import CaptureBusy, SnapshotSession
from pgbackup.postgres.sources import read_source_identity
from pgbackup.postgres.target import PgTarget, tools_for_server
from rclone_provider.client import Rclone

LAYOUT = BackupLayout("database")


def publish_with_source(captured, client, source: PgTarget, layout: BackupLayout = LAYOUT):
    """Upload, verify and commit a capture; a capture that does not yet record ``details["source"]`` gets it here."""
    client.upload(captured.path, captured.object_path)
    method = client.verify(captured.object_path, size=captured.bytes, sha256=captured.sha256)
    extra = {}
    if "source" not in captured.details:
        conn = source.connect()
        with conn.cursor() as cur:
            extra["source"] = read_source_identity(cur).to_dict()
        conn.close()
    manifest = captured.manifest(verified_method=method, extra_details=extra)
    client.put_bytes(manifest.to_json(), layout.manifest_path(manifest.kind, manifest.id))
    return manifest


def back_up_chain(source: PgTarget, local_remote, local_dir, *changes, layout: BackupLayout = LAYOUT) -> list:
    """A full backup of ``source``, then per entry of ``changes`` (a list of SQL statements) the change and an incremental."""
    num, version = source.server_version()
    capture = BackupCapture(source, tools_for_server(num), Compression(), local_dir=local_dir, prefix=layout.prefix, server_version=version)
    client = Rclone(local_remote)
    chain = [publish_with_source(capture.full(), client, source, layout)]
    for statements in changes:
        execute(source, *statements)
        captured = capture.incremental(chain[-1])
        assert captured.kind == "incremental", captured.details.get("promoted_from_incremental")
        chain.append(publish_with_source(captured, client, source, layout))
    return chain


def database_with(make_database, *statements: str, prefix: str = "src") -> PgTarget:
    """A new database (dropped after the test) holding what ``statements`` create."""
    target = make_database(prefix)
    execute(target, *statements)
    return target


def scratch_names():
    """Body of a ``scratch_name`` fixture: names for databases the restore itself creates, each dropped after the test."""
    names = []

    def name(label: str = "restored") -> str:
        names.append(f"pgb_{label}_{uuid.uuid4().hex[:10]}")
        return names[-1]

    yield name
    conn = admin_connection()
    with conn.cursor() as cur:
        for name in names:
            cur.execute('DROP DATABASE IF EXISTS "{}" WITH (FORCE)'.format(name.replace('"', '""')))
    conn.close()


def url_of(dbname: str, user: str = "postgres") -> str:
    base = PG_SERVER_URL.replace("postgresql://postgres@", f"postgresql://{user}@")
    return f"{base}/{dbname}"


def target_named(dbname: str) -> PgTarget:
    return PgTarget.from_url(url_of(dbname))


@pytest.fixture
def one_full(shop_db, local_remote, tmp_path):
    num, version = shop_db.server_version()
    captured = BackupCapture(shop_db, tools_for_server(num), Compression(), local_dir=tmp_path / "local",
                             prefix="database", server_version=version).full()
    client = Rclone(local_remote)
    client.upload(captured.path, captured.object_path)
    manifest = captured.manifest(verified_method=client.verify(captured.object_path, size=captured.bytes, sha256=captured.sha256))
    client.put_bytes(manifest.to_json(), LAYOUT.manifest_path("full", manifest.id))
    return manifest


def backupctl(local_remote, *args, **extra_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKUP_"))}
    env["AIRFLOW_CONN_BACKUP_REMOTE"] = json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": local_remote.root}})
    env.update(extra_env)
    return subprocess.run([sys.executable, str(PROJECT / "bin" / "backupctl"), *args], env=env, capture_output=True, text=True, timeout=300)


def database_exists(name):
    conn = admin_connection()
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        found = cur.fetchone() is not None
    conn.close()
    return found


def test_restore_creates_a_missing_target_and_checks_it(one_full, local_remote, make_database):
    name = make_database("placeholder").dbname + "_new"
    try:
        result = backupctl(local_remote, "restore", "--to", f"postgresql://postgres@127.0.0.1:5432/{name}")
        assert result.returncode == 0, result.stderr
        assert f"Restored {one_full.id}" in result.stdout
    finally:
        conn = admin_connection()
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def test_dry_run_changes_nothing(one_full, local_remote):
    result = backupctl(local_remote, "restore", "--to", "postgresql://postgres@127.0.0.1:5432/pgb_never_created", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Dry run: nothing downloaded, nothing changed." in result.stdout and one_full.id in result.stdout
    assert not database_exists("pgb_never_created")


def test_non_empty_target_is_refused_without_clean(one_full, local_remote, shop_db):
    result = backupctl(local_remote, "restore", "--to", f"postgresql://postgres@127.0.0.1:5432/{shop_db.dbname}")
    assert result.returncode == 1
    assert "is not empty" in result.stderr and "--clean" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--at", "2001-01-01T00:00:00Z"], "no backup at or before 2001-01-01"),
        (["--at", "2030-01-01T00:00:00"], "has no time zone"),
        (["--backup", "20990101T000000Z-full"], "no backup with id '20990101T000000Z-full'"),
    ],
)
def test_bad_restore_requests_get_one_clear_line(one_full, local_remote, args, message):
    result = backupctl(local_remote, "restore", "--to", "postgresql://postgres@127.0.0.1:5432/pgb_unused", *args)
    assert result.returncode == 1
    assert message in result.stderr.strip().splitlines()[-1]
    assert not database_exists("pgb_unused")


def test_a_password_on_the_command_line_is_refused(local_remote):
    result = backupctl(local_remote, "restore", "--to", "postgresql://postgres:hunter2@127.0.0.1:5432/x")
    assert result.returncode == 1 and "PGPASSWORD" in result.stderr


def test_restore_without_target_prints_the_procedure(one_full, local_remote):
    result = backupctl(local_remote, "restore")
    assert result.returncode == 0
    assert one_full.id in result.stdout and "bin/backupctl restore --to" in result.stdout and "--dry-run" in result.stdout


def test_verify_reports_a_damaged_object_by_name(one_full, local_remote):
    from pathlib import Path

    assert backupctl(local_remote, "verify").returncode == 0
    stored = Path(local_remote.root) / one_full.artifact.path
    data = bytearray(stored.read_bytes())
    data[100] ^= 1
    stored.write_bytes(bytes(data))
    result = backupctl(local_remote, "verify")
    assert result.returncode == 1
    assert f"DAMAGED  {one_full.id}" in result.stdout


def test_two_captures_of_one_database_never_overlap(shop_db):
    first = SnapshotSession(shop_db)
    try:
        with pytest.raises(CaptureBusy):
            SnapshotSession(shop_db, lock_wait_seconds=1)
    finally:
        first.close()
    SnapshotSession(shop_db, lock_wait_seconds=1).close()


def test_a_target_server_older_than_the_backup_is_refused(one_full, local_remote):
    import json as _json
    from pathlib import Path

    manifest_file = Path(local_remote.root) / LAYOUT.manifest_path("full", one_full.id)
    data = _json.loads(manifest_file.read_text())
    data["server_version"] = "99.1"  # as if the backup came from a newer PostgreSQL than this server
    manifest_file.write_text(_json.dumps(data))
    result = backupctl(local_remote, "restore", "--to", "postgresql://postgres@127.0.0.1:5432/pgb_too_old")
    assert result.returncode == 1
    assert "older than the backup's 99.1" in result.stderr
    assert not database_exists("pgb_too_old")


def test_refused_credentials_on_the_target_are_one_clear_line(one_full, local_remote):
    result = backupctl(local_remote, "restore", "--to", "postgresql://pgb_no_such_role@127.0.0.1:5432/pgb_x")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("backupctl: error: restore target: cannot connect to pgb_no_such_role@127.0.0.1:5432/postgres")
