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
def blocked_source(shop_db) -> PgTarget:
    """The sample shop with its "order" table locked: a pg_dump of it waits for the lock until it is killed."""
    blocker = shop_db.connect()
    blocker.cursor().execute('LOCK TABLE "order" IN ACCESS EXCLUSIVE MODE')
    yield shop_db
    blocker.rollback()
    blocker.close()


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


# Fixtures that bring up a real part: PostgreSQL, a cluster or server of its own, a server on loopback, Airflow.
# A test that uses none of them (directly or through another fixture), carries no slower tier's marker and is
# not in a module below is in the `unit` tier; every other test is `integration`.
REAL_PART_FIXTURES = frozenset({"make_database", "shop_db", "capture", "airflow_home", "webdav_server", "webdav_remote", "smtp_server",
                                "cluster", "own_server"})
SLOWER_TIERS = ("airflow", "compose", "integration")
# Modules whose tests reach a real part without such a fixture (or a module-level `pytestmark = pytest.mark.integration`).
INTEGRATION_MODULES = {
    "cli/test_import_layers.py": "a fresh Python interpreter per check",
    "dags/test_dag_integrity.py": "Airflow's DagBag in a subprocess",
    "differential/test_backup_points.py": "PostgreSQL",
    "pgbackup/test_capture_locks.py": "PostgreSQL",
    "pgbackup/test_catalog_and_prune.py": "backupctl",
    "pgbackup/test_clock_untrusted.py": "backupctl under faketime",
    "pgbackup/test_postgres.py": "pg_dump --version",
    "pgbackup/test_restore_cli.py": "backupctl",
    "pgbackup/test_restore_encoding.py": "PostgreSQL",
    "pgbackup/test_restore_plan.py": "pg_dump --version",
    "pgbackup/test_scratch.py": "child Pythons holding scratch folders",
    "pgbackup/test_server_majors.py": "an embedded PostgreSQL 18",
    "pgbackup/test_sources_cli.py": "backupctl",
    "pgbackup/test_status_cli.py": "backupctl",
    "pgbackup_airflow/test_alerts.py": "Airflow in a subprocess",
    "rclone_provider/test_client.py": "rclone serve webdav (a parametrized remote)",
}


def pytest_collection_modifyitems(config, items):
    """Mark the `unit` tier (`make test-unit`, ``-m unit``) by what each test uses.

    The compose stack test builds images and starts seven containers: minutes the rest of the suite
    should not pay for, so it runs only when asked for (``-m compose``, `make test-compose`)."""
    tests = Path(__file__).parent
    for item in items:
        module = item.path.relative_to(tests).as_posix() if item.path.is_relative_to(tests) else item.path.name
        if (REAL_PART_FIXTURES.intersection(item.fixturenames) or module in INTEGRATION_MODULES
                or any(item.get_closest_marker(m) for m in SLOWER_TIERS)):
            item.add_marker(pytest.mark.integration)
        else:
            item.add_marker(pytest.mark.unit)
    if "compose" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="the docker compose stack test runs with `make test-compose` (pytest -m compose)")
    for item in items:
        if "compose" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _unit_tier_stays_unit(request, monkeypatch):
    """A `unit` test that reaches PostgreSQL, the network, a fresh Python or an Airflow/PostgreSQL program fails at
    once, naming what it touched, instead of making the fast tier slow: mark its module ``pytest.mark.integration``
    (or list it in INTEGRATION_MODULES, or use a real-part fixture) and it moves to the full suite."""
    if request.node.get_closest_marker("unit") is None:
        return
    import socket
    import subprocess

    def refuse(what):
        raise RuntimeError(f"a `unit` test reached {what}: mark its module pytest.mark.integration (see tests/conftest.py)")

    def no_connect(*args, **kwargs):
        refuse("PostgreSQL (psycopg2.connect)")

    real_connect = socket.socket.connect

    def loopback_free_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse(f"the network ({address})")
        return real_connect(sock, address)

    real_popen_init = subprocess.Popen.__init__

    def guarded_popen(self, args, *rest, **kwargs):
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        programs = {Path(str(a)).name for a in argv[:3]}
        if programs & {"airflow", "backupctl", "pg_dump", "pg_restore", "psql", "initdb", "pg_ctl", "runuser"} or str(argv[0]) == sys.executable:
            refuse(f"a program of the integration tier ({' '.join(map(str, argv[:3]))})")
        real_popen_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(psycopg2, "connect", no_connect)
    monkeypatch.setattr(socket.socket, "connect", loopback_free_connect)
    monkeypatch.setattr(subprocess.Popen, "__init__", guarded_popen)


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
