"""The incremental and drill DAGs run for real with `airflow dags test`; restores go through `backupctl restore`."""

import json
import subprocess
from pathlib import Path

import pytest

from commands import backupctl, dags_test
from conftest import backup_env
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from pgbackup.restore.drill import latest_drill
from pgcompare import database_content
from rclone_provider.client import Rclone
from sample_shop import mutate_sample_shop

pytestmark = pytest.mark.airflow
LAYOUT = BackupLayout("database")


@pytest.fixture
def env(airflow_home, shop_db, local_remote, tmp_path):
    return backup_env(shop_db, {"type": "local", "root": local_remote.root}, tmp_path / "local")


def mutate(target, fraction, seed):
    conn = target.connect()
    mutate_sample_shop(conn, fraction, seed)
    conn.close()


def test_first_incremental_takes_a_full_then_chains_and_restores_at_each_point(env, shop_db, local_remote, make_database):
    first = dags_test("pg_incremental_backup", env)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "No full backup marker found" in first.stdout + first.stderr
    expected = {}
    (full,) = Catalog.load(Rclone(local_remote), LAYOUT).backups
    assert full.kind == "full" and full.details["promoted_from_incremental"] == "no full backup exists yet"
    expected[full.id] = database_content(shop_db)
    for seed in (21, 22):
        mutate(shop_db, 0.03, seed)
        result = dags_test("pg_incremental_backup", env)
        assert result.returncode == 0, result.stdout[-3000:]
        newest = Catalog.load(Rclone(local_remote), LAYOUT).backups[-1]
        assert newest.kind == "incremental"
        expected[newest.id] = database_content(shop_db)
    backups = Catalog.load(Rclone(local_remote), LAYOUT).backups
    assert [b.kind for b in backups] == ["full", "incremental", "incremental"]
    assert backups[2].parent_id == backups[1].id and backups[2].base_full_id == full.id
    for backup_id, content in expected.items():
        target = make_database("cli")
        restored = backupctl(env, "restore", "--to", f"postgresql://postgres@127.0.0.1:5432/{target.dbname}", "--backup", backup_id, "--clean")
        assert restored.returncode == 0, restored.stderr[-3000:]
        assert "every table's fingerprint and every sequence match" in restored.stdout
        assert database_content(target) == content


def drill_databases() -> set[str]:
    listed = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SELECT datname FROM pg_database WHERE datname LIKE 'pgbackup_drill_%'"],
                            capture_output=True, text=True, check=True)
    return set(listed.stdout.split())


def test_drill_passes_on_a_good_backup_and_fails_on_a_wrong_fingerprint(env, shop_db, local_remote):
    # Only this test's scratch databases count: a drill another harness's cluster was stopped in may have left its own.
    before = drill_databases()
    assert dags_test("pg_full_backup", env).returncode == 0
    good = dags_test("pg_restore_drill", env)
    assert good.returncode == 0, good.stdout[-3000:]
    record = latest_drill(Rclone(local_remote), LAYOUT)
    assert record["ok"] is True and record["seconds"] > 0 and len(record["chain"]) == 1

    (backup,) = Catalog.load(Rclone(local_remote), LAYOUT).backups
    manifest_file = Path(local_remote.root) / LAYOUT.manifest_path("full", backup.id)
    data = json.loads(manifest_file.read_text())
    data["details"]["fingerprints"]["public.customer"]["rows"] += 1
    manifest_file.write_text(json.dumps(data))
    bad = dags_test("pg_restore_drill", env)
    assert bad.returncode != 0
    record = latest_drill(Rclone(local_remote), LAYOUT)
    assert record["ok"] is False and "public.customer" in record["error"]
    assert drill_databases() <= before  # both drills dropped their scratch database
