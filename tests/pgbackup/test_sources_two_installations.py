"""Two installations — two source databases, two machines' local folders and Airflow homes — writing under one
remote root and prefix.  Real runs of the full-backup DAG (`airflow dags test`), the real rclone local remote,
then `backupctl` as each installation's operator would type it."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from commands import backupctl
from conftest import PG_SERVER_URL, airflow_cli, seeded_shop
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout, backup_id_stamp
from pgcompare import database_content
from rclone_provider.client import Rclone

pytestmark = pytest.mark.airflow
LAYOUT = BackupLayout("database")


def source_key(target) -> str:
    """``sysid/oid`` of a database, by SQL of the test's own."""
    conn = target.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT (SELECT system_identifier::text FROM pg_control_system()) || '/' || oid FROM pg_database WHERE datname = current_database()")
        key = cur.fetchone()[0]
    conn.close()
    return key


class Installation:
    """One machine's configuration: its source, local folder and Airflow home; the remote is shared."""

    def __init__(self, name: str, source, remote_root: str, tmp_path: Path) -> None:
        self.name, self.source = name, source
        self.home = tmp_path / f"airflow-{name}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "BACKUP_", "AIRFLOW_HOME"))}
        env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW_CONN_BACKUP_SOURCE=f"{PG_SERVER_URL}/{source.dbname}",
            AIRFLOW_CONN_BACKUP_REMOTE=json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": remote_root}}),
            BACKUP_LOCAL_DIR=str(tmp_path / f"local-{name}"),
            BACKUP_TASK_RETRIES="0",
        )
        self.env = env
        self.home.mkdir()
        subprocess.run([airflow_cli(), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)

    def full_backup_at(self, moment: datetime) -> None:
        """The full-backup DAG with this process's clock frozen at ``moment`` (the machine's clock is not touched)."""
        env = {**self.env, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        stamp = moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        result = subprocess.run(["faketime", "-f", stamp, airflow_cli(), "dags", "test", "pg_full_backup"],
                                env={**env, "TZ": "UTC"}, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    def backupctl(self, *args: str, **extra: str) -> subprocess.CompletedProcess:
        return backupctl({**self.env, **extra}, *args)


@pytest.fixture
def two_installations(airflow_home, make_database, local_remote, tmp_path):
    a = Installation("a", seeded_shop(make_database, "shop_a", 7), local_remote.root, tmp_path)
    b = Installation("b", seeded_shop(make_database, "shop_b", 11), local_remote.root, tmp_path)
    return a, b


def test_two_installations_under_one_prefix_never_mix_or_destroy_each_others_backups(two_installations, local_remote, make_database):
    a, b = two_installations
    same_second = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=10)
    a.full_backup_at(same_second)
    b.full_backup_at(same_second)
    remote = Rclone(local_remote)
    both = Catalog.load(remote, LAYOUT).backups
    assert len(both) == 2 and both[0].id != both[1].id
    assert {backup_id_stamp(m.id) for m in both} == {same_second.strftime("%Y%m%dT%H%M%SZ")}
    a_full = next(m for m in both if m.source.key == source_key(a.source))
    b_full = next(m for m in both if m.source.key == source_key(b.source))

    # Neither upload replaced the other's object: each verifies against its own manifest.
    for installation in (a, b):
        verified = installation.backupctl("verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr

    # Each status sees only its own backups and warns about the other source.
    for installation, own, _other in ((a, a_full, b_full), (b, b_full, a_full)):
        report = json.loads(installation.backupctl("status", "--json").stdout)
        assert [x["id"] for x in report["backups"]] == [own.id]
        assert any(w.startswith("another source writes here: ") and source_key(other_of(installation, a, b).source) in w
                   for w in report["warnings"]), report["warnings"]

    # A's restore restores A, whichever backup is newer on the shared prefix.
    target = make_database("a_restored")
    restored = a.backupctl("restore", "--to", f"{PG_SERVER_URL}/{target.dbname}", "--clean")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert a_full.id in restored.stdout and database_content(target) == database_content(a.source)

    # B takes a new full; its retention (7 days) prunes B's old full, never A's only full.
    b.full_backup_at(datetime.now(timezone.utc) - timedelta(minutes=10))
    pruned = b.backupctl("retention", BACKUP_REMOTE_FULL_RETENTION="7d", BACKUP_REMOTE_INCREMENTAL_RETENTION="7d")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    remaining = {m.id for m in Catalog.load(remote, LAYOUT).backups}
    assert a_full.id in remaining and b_full.id not in remaining
    assert f"DELETE {a_full.id}" not in pruned.stdout and f"DELETE {b_full.id}" in pruned.stdout
    assert "another source writes here" in pruned.stdout


def other_of(installation, a, b):
    return b if installation is a else a


def test_with_the_source_unreachable_restore_names_the_sources_and_how_to_choose(two_installations, local_remote, make_database):
    a, b = two_installations
    a.full_backup_at(datetime.now(timezone.utc) - timedelta(minutes=20))
    b.full_backup_at(datetime.now(timezone.utc) - timedelta(minutes=10))
    gone = {**a.env, "AIRFLOW_CONN_BACKUP_SOURCE": f"{PG_SERVER_URL}/pgb_source_that_is_gone"}
    target = make_database("dr")
    refused = backupctl(gone, "restore", "--to", f"{PG_SERVER_URL}/{target.dbname}")
    assert refused.returncode == 1
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("backupctl: error:")]
    assert "backups of 2 sources are stored under this prefix" in line and "--source-id SYSID/OID" in line
    assert source_key(a.source) in line and source_key(b.source) in line
    chosen = backupctl(gone, "restore", "--source-id", source_key(a.source), "--to", f"{PG_SERVER_URL}/{target.dbname}", "--clean")
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    assert database_content(target) == database_content(a.source)
