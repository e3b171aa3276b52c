"""`backupctl restore` as an operator uses it in a disaster: no Airflow, only the remote and the connection variable.

The helpers it shares with the other restore tests are in ``tests/restore_helpers.py``.
"""


import pytest

from conftest import admin_connection
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.postgres.snapshot import CaptureBusy, SnapshotSession
from pgbackup.postgres.target import tools_for_server
from rclone_provider.client import Rclone
from restore_helpers import LAYOUT, backupctl, database_exists, publish_with_source


@pytest.fixture
def one_full(shop_db, local_remote, tmp_path):
    num, version = shop_db.server_version()
    captured = BackupCapture(shop_db, tools_for_server(num), Compression(), local_dir=tmp_path / "local",
                             prefix="database", server_version=version).full()
    return publish_with_source(captured, Rclone(local_remote), shop_db)


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
