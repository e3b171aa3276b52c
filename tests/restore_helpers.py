"""What the restore tests share: a chain of real backups of a small database, ``backupctl`` run as a subprocess, scratch databases.

Used by ``tests/pgbackup/test_restore_*``, ``test_apply_*`` and ``test_drill*``: a
change to how a chain is backed up or a restore is run is made here once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from chain_steps import execute
from conftest import PG_SERVER_URL, PROJECT, admin_connection
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.model.layout import BackupLayout
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


def backupctl(local_remote, *args, **extra_env):
    """``bin/backupctl`` in a clean environment whose remote is ``local_remote``; ``extra_env`` adds variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKUP_"))}
    env["AIRFLOW_CONN_BACKUP_REMOTE"] = json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": local_remote.root}})
    env.update(extra_env)
    return subprocess.run([sys.executable, str(PROJECT / "bin" / "backupctl"), *args], env=env, capture_output=True, text=True, timeout=300)


def restore_newest(local_remote, scratch_name) -> PgTarget:
    """``backupctl restore`` of the newest backup point into a new scratch database, which must succeed."""
    name = scratch_name()
    result = backupctl(local_remote, "restore", "--to", url_of(name))
    assert result.returncode == 0, result.stderr
    return target_named(name)


def database_exists(name: str) -> bool:
    conn = admin_connection()
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        found = cur.fetchone() is not None
    conn.close()
    return found


def query(target: PgTarget, statement: str, *params) -> list[tuple]:
    """Every row ``statement`` returns on ``target``, read on a connection of its own."""
    conn = target.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params or None)
            return cur.fetchall()
    finally:
        conn.close()
