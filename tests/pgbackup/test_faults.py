"""Things break for real — a full local disk, the server killing pg_dump — and nothing half-written is left."""

import subprocess
from pathlib import Path

import pytest

from conftest import admin_connection
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.capture.dump import DumpError
from pgbackup.postgres.target import tools_for_server
from waiting import InThread, wait_for_lock_wait


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: far too small for the sample shop's dump."""
    mount_point = tmp_path / "small disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def capture_for(target, local_dir):
    num, version = target.server_version()
    return BackupCapture(target, tools_for_server(num), Compression(level=1), local_dir=local_dir, prefix="database", server_version=version)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_full_local_disk_fails_cleanly_and_leaves_older_backups(shop_db, small_disk):
    older = small_disk / "database" / "full" / "20260101T000000Z-full.dump.zst"
    older.parent.mkdir(parents=True)
    older.write_bytes(b"an older backup" * 1000)
    with pytest.raises(DumpError, match="local disk full"):
        capture_for(shop_db, small_disk).full()
    assert files_under(small_disk) == ["database/full/20260101T000000Z-full.dump.zst"]
    assert older.read_bytes() == b"an older backup" * 1000


def test_server_killing_pg_dump_fails_cleanly(shop_db, tmp_path):
    blocker = shop_db.connect()
    blocker.cursor().execute('LOCK TABLE "order" IN ACCESS EXCLUSIVE MODE')  # pg_dump waits here
    worker = InThread(capture_for(shop_db, tmp_path).full)
    try:
        (pid,) = wait_for_lock_wait(shop_db.dbname)
        admin = admin_connection()
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
            assert cur.fetchone() == (True,)
        admin.close()
        outcome = worker.outcome(timeout=60)
    finally:
        blocker.rollback()
        blocker.close()
    assert isinstance(outcome, DumpError), outcome
    assert "pg_dump" in str(outcome)
    assert [f for f in files_under(tmp_path) if "state" not in f] == []
    assert not any((tmp_path / "state").rglob("COMPLETE"))
