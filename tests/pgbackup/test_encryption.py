"""Encryption at rest with rclone's crypt backend wrapping the storage remote."""

import subprocess
from pathlib import Path

import pytest

from chain_steps import LAYOUT, publish
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.model.catalog import Catalog
from pgbackup.postgres.target import tools_for_server
from pgbackup.restore.chain import ChainRestore, choose_chain
from pgcompare import database_content
from rclone_provider.client import Rclone, RemoteConfig, RemoteConfigError, find_rclone
from sample_shop import mutate_sample_shop


def obscure(secret: str) -> str:
    """rclone's config form of a password, made through stdin (never argv)."""
    return subprocess.run([find_rclone(), "obscure", "-"], input=secret, capture_output=True, text=True, check=True).stdout.strip()


def crypt_remote(base: Path, secret: str) -> RemoteConfig:
    return RemoteConfig.from_extra("backup_remote", {"type": "crypt", "password": obscure(secret), "wraps": {"type": "local", "root": str(base)}})


@pytest.fixture
def encrypted_backups(shop_db, tmp_path):
    base = tmp_path / "stored bytes"
    client = Rclone(crypt_remote(base, "correct horse battery staple"))
    num, version = shop_db.server_version()
    capture = BackupCapture(shop_db, tools_for_server(num), Compression(level=1), local_dir=tmp_path / "local", prefix="database", server_version=version)
    full = publish(capture.full(), client)
    conn = shop_db.connect()
    mutate_sample_shop(conn, 0.02, 3)
    conn.close()
    inc = publish(capture.incremental(full), client)
    return base, client, inc


def test_stored_bytes_hold_no_dump_magic_names_or_row_values(encrypted_backups, shop_db):
    base, _, _ = encrypted_backups
    conn = shop_db.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT email_address FROM customer ORDER BY id LIMIT 1")
        email = cur.fetchone()[0].encode()
    conn.close()
    files = [p for p in base.rglob("*") if p.is_file()]
    assert len(files) == 4
    for path in files:
        data = path.read_bytes()
        assert b"PGDMP" not in data and b"pgbackup-manifest" not in data and email not in data
        assert "full" not in path.name and "manifest" not in path.name


def test_restore_with_the_key_is_exact(encrypted_backups, shop_db, make_database):
    _, client, inc = encrypted_backups
    target = make_database("decrypted")
    ChainRestore(client, LAYOUT).run(choose_chain(Catalog.load(client, LAYOUT), backup_id=inc.id), target)
    assert database_content(target) == database_content(shop_db)


def test_a_wrong_key_fails_clearly(encrypted_backups):
    base, _, _ = encrypted_backups
    with pytest.raises(RemoteConfigError, match="cannot decrypt: wrong password"):
        Catalog.load(Rclone(crypt_remote(base, "not the key")), LAYOUT)
