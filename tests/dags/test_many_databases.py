"""Several source databases (BACKUP_DATABASES) in one DAG run: a mapped task instance each, failing and alerting alone.

Real runs with `airflow dags test`, then `backupctl` per database: status, restore, and the refusal to guess which one.
"""

from __future__ import annotations

import json
import os
from email import message_from_bytes, policy

import pytest

from commands import backupctl, dags_test
from conftest import PG_SERVER_URL, seeded_shop, smtp_connection_env
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from pgcompare import library_fingerprints
from rclone_provider.client import Rclone

pytestmark = pytest.mark.airflow


@pytest.fixture
def three_databases(airflow_home, make_database, local_remote, tmp_path, smtp_server):
    """shop and blog hold data; broken's connection names a database that does not exist."""
    shop, blog = seeded_shop(make_database, "shop", 7), seeded_shop(make_database, "blog", 11)
    controller, inbox = smtp_server
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "BACKUP_"))}
    env.update(
        BACKUP_DATABASES="shop=src_shop, blog=src_blog, broken=src_broken",
        AIRFLOW_CONN_SRC_SHOP=f"{PG_SERVER_URL}/{shop.dbname}",
        AIRFLOW_CONN_SRC_BLOG=f"{PG_SERVER_URL}/{blog.dbname}",
        AIRFLOW_CONN_SRC_BROKEN=f"{PG_SERVER_URL}/{shop.dbname}_does_not_exist",
        AIRFLOW_CONN_BACKUP_REMOTE=json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": local_remote.root}}),
        BACKUP_LOCAL_DIR=str(tmp_path / "local"),
        BACKUP_TASK_RETRIES="0",
        BACKUP_ALERT_EMAILS="ops@example.com",
        **smtp_connection_env(controller.port),
    )
    return {"shop": shop, "blog": blog}, env, inbox


def test_each_database_is_backed_up_alone_and_a_broken_one_blocks_nobody(three_databases, local_remote, make_database):
    databases, env, inbox = three_databases
    result = dags_test("pg_full_backup", env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, "the broken database must fail the run"

    remote = Rclone(local_remote)
    for name, source in databases.items():
        catalog = Catalog.load(remote, BackupLayout(name))
        (backup,) = catalog.backups
        assert backup.kind == "full" and backup.database == source.dbname, output[-3000:]
        assert backup.artifact.path == f"{name}/full/{backup.id}.dump.zst"
    assert remote.list("broken", recursive=True) == []

    # one alert, for the broken database only, naming it
    (envelope,) = inbox.envelopes
    message = message_from_bytes(envelope.content, policy=policy.default)
    assert message["Subject"] == "[pgbackup] FAILED pg_full_backup.backup.dump_compress_checksum [broken]"
    body = message.get_body(("html",)).get_content()
    assert "_does_not_exist" in body and "does not exist" in body

    # restore needs to be told which database; then it restores that one exactly
    refused = backupctl(env, "restore", "--to", f"{PG_SERVER_URL}/never_created")
    assert refused.returncode == 1
    assert "several databases are configured (shop, blog, broken): choose one with --database" in refused.stderr
    target = make_database("blog_restored")
    restored = backupctl(env, "restore", "--database", "blog", "--to", f"{PG_SERVER_URL}/{target.dbname}", "--clean")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert library_fingerprints(target) == library_fingerprints(databases["blog"]) != library_fingerprints(databases["shop"])

    # status covers every database, and says which one has no backup
    status = backupctl(env, "status", "--json")
    assert status.returncode == 2, status.stderr
    report = json.loads(status.stdout)
    assert list(report["databases"]) == ["shop", "blog", "broken"]
    assert [len(report["databases"][n]["backups"]) for n in ("shop", "blog", "broken")] == [1, 1, 0]
    assert any(w.startswith("broken: no successful backup in the catalog") for w in report["warnings"])
    assert not any(w.startswith(("shop:", "blog:")) for w in report["warnings"])
    one = backupctl(env, "status", "--database", "shop", "--json")
    assert json.loads(one.stdout)["remote"].endswith("/shop")
    unknown = backupctl(env, "list", "--database", "crm")
    assert unknown.returncode == 1 and "no database called 'crm'; configured: shop, blog, broken" in unknown.stderr


def test_incrementals_and_drills_chain_per_database(three_databases, local_remote):
    databases, env, _ = three_databases
    env = {**env, "BACKUP_DATABASES": "shop=src_shop, blog=src_blog"}
    for dag_id in ("pg_full_backup", "pg_incremental_backup"):
        result = dags_test(dag_id, env)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    remote = Rclone(local_remote)
    for name in databases:
        full, incremental = Catalog.load(remote, BackupLayout(name)).backups
        assert incremental.kind == "incremental" and incremental.parent_id == full.id, name
    drill = backupctl(env, "verify", "--drill", "--database", "blog")
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert remote.list("blog/drills") and not remote.list("shop/drills")
    ambiguous = backupctl(env, "verify", "--drill", "--backup", full.id)
    assert ambiguous.returncode == 1 and "add --database" in ambiguous.stderr
