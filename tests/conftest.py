"""Real parts for the tests: databases on the local PostgreSQL, rclone remotes (a directory and a
WebDAV server on loopback), and a throwaway AIRFLOW_HOME for running DAGs with `airflow dags test`."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest

from loopback import RcloneServer
from pgbackup.capture.capture import BackupCapture
from pgbackup.capture.compression import Compression
from pgbackup.postgres.target import PgTarget, tools_for_server
from rclone_provider.client import Rclone, RemoteConfig
from sample_shop import seed_sample_shop

PROJECT = Path(__file__).resolve().parent.parent
PG_SERVER_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432")


def admin_connection():
    conn = psycopg2.connect(f"{PG_SERVER_URL}/postgres")
    conn.autocommit = True
    return conn


@pytest.fixture
def make_database():
    """Factory of uniquely named, empty databases, all dropped after the test."""
    created: list[str] = []

    def make(prefix: str = "t") -> PgTarget:
        name = f"pgb_{prefix}_{uuid.uuid4().hex[:10]}"
        conn = admin_connection()
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        created.append(name)
        return PgTarget.from_url(f"{PG_SERVER_URL}/{name}")

    yield make
    conn = admin_connection()
    with conn.cursor() as cur:
        for name in created:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def seeded_shop(make_database, name: str = "shop", seed: int = 7) -> PgTarget:
    """A new database (from the ``make_database`` factory) holding the sample shop at scale 1."""
    target = make_database(name)
    conn = target.connect()
    seed_sample_shop(conn, scale=1, seed=seed)
    conn.commit()
    conn.close()
    return target


@pytest.fixture
def shop_db(make_database) -> PgTarget:
    """A database holding the sample shop (scale 1)."""
    return seeded_shop(make_database)


@pytest.fixture
def local_remote(tmp_path) -> RemoteConfig:
    """A local-directory remote whose root has a space and non-ASCII characters, as real ones do."""
    return RemoteConfig.from_extra("backup_remote", {"type": "local", "root": str(tmp_path / "remote root" / "Bäckups ü")})


@pytest.fixture
def webdav_server(tmp_path):
    """`rclone serve webdav` on 127.0.0.1 over a fresh directory; stopped after the test."""
    server = RcloneServer("webdav", tmp_path / "webdav-served")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def webdav_remote(webdav_server) -> RemoteConfig:
    return RemoteConfig.from_extra("backup_remote", {"type": "webdav", "url": webdav_server.url, "root": "Shop Backups"})


def backup_env(source: PgTarget, remote_extra: dict | None, local_dir: Path, *, password: str | None = None, **extra: str) -> dict[str, str]:
    """The environment a DAG run or ``backupctl`` needs: this process's (with the throwaway AIRFLOW_HOME),
    plus the source and remote connections and the local backup folder."""
    credentials = f"{source.user}:{password}" if password else source.user
    env = dict(os.environ)
    env.update(
        AIRFLOW_CONN_BACKUP_SOURCE=f"postgresql://{credentials}@{source.host}:{source.port}/{source.dbname}",
        BACKUP_LOCAL_DIR=str(local_dir),
        **extra,
    )
    if remote_extra is not None:
        env["AIRFLOW_CONN_BACKUP_REMOTE"] = json.dumps({"conn_type": "rclone", "extra": remote_extra})
    return env


def pytest_configure(config):
    """Point Airflow at a throwaway home and this project's DAGs before anything imports it."""
    import tempfile

    for key in [k for k in os.environ if k.startswith(("AIRFLOW_CONN_", "BACKUP_"))]:
        del os.environ[key]
    home = Path(tempfile.mkdtemp(prefix="pgbackup-airflow-home-"))
    os.environ.update(airflow_env(home))


def pytest_collection_modifyitems(config, items):
    """The compose stack test builds images and starts seven containers: minutes the rest of the suite
    should not pay for, so it runs only when asked for (``-m compose``, `make test-compose`)."""
    if "compose" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="the docker compose stack test runs with `make test-compose` (pytest -m compose)")
    for item in items:
        if "compose" in item.keywords:
            item.add_marker(skip)


def airflow_env(home: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "BACKUP_TASK_RETRIES": "0",
    }


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's Airflow home with its SQLite metadata database migrated (once)."""
    import subprocess

    home = Path(os.environ["AIRFLOW_HOME"])
    if not (home / "airflow.db").exists():
        subprocess.run([airflow_cli(), "db", "migrate"], check=True, capture_output=True)
    return home


def airflow_cli() -> str:
    return str(Path(sys.executable).with_name("airflow"))


class _Inbox:
    def __init__(self) -> None:
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_server():
    """An SMTP server on 127.0.0.1 (aiosmtpd) that keeps every message it is given: ``(controller, inbox)``."""
    from aiosmtpd.controller import Controller

    from loopback import free_port

    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


def smtp_connection_env(port: int) -> dict[str, str]:
    """``AIRFLOW_CONN_SMTP_DEFAULT`` for the loopback server of ``smtp_server``, without TLS."""
    smtp = {"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": {"disable_tls": True, "disable_ssl": True, "timeout": 10}}
    return {"AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp)}


@pytest.fixture
def capture(shop_db, tmp_path):
    """The library's capture of the sample shop, keeping its local copies and row-key state under ``tmp_path``."""
    num, version = shop_db.server_version()
    return BackupCapture(shop_db, tools_for_server(num), Compression(), local_dir=tmp_path / "local", prefix="database", server_version=version)


@pytest.fixture
def client(local_remote):
    """An rclone client of ``local_remote``."""
    return Rclone(local_remote)
