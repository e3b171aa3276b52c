"""The deployment as a user runs it: `docker compose up` of this checkout's docker-compose.yaml and
Dockerfile, signed in to and driven through Airflow's REST API, backing up a real PostgreSQL, restoring
it, and alerting by e-mail.  One stack for the module; the tests run in file order, each on what the
earlier ones left (the full backup before the incremental, both before the restore).

Run: `make test-compose` (``python -m pytest tests/compose -m compose``).  Skipped, with the reason,
where no Docker engine can be started.  See compose_stack.py for the stand-in images and networking.
"""

from __future__ import annotations

import json
import os
import secrets
import time

import psycopg2
import pytest
from compose_stack import SOURCE_PORT, ComposeStack, DockerDaemon, RestApi, StandinImages, uncommitted_changes  # noqa: E402

from pgbackup.postgres.target import PgTarget  # noqa: E402
from pgcompare import database_content  # noqa: E402
from sample_shop import seed_sample_shop  # noqa: E402

pytestmark = pytest.mark.compose

DAG_IDS = {"pg_full_backup", "pg_incremental_backup", "pg_restore_drill", "pg_backup_staleness"}
ADMIN = "admin"
ALERT_TO = "ops@example.test"
# PGBACKUP_COMPOSE_KEEP=failed leaves the stack, its folder (logs/ holds every task's log) and dockerd running
# after the module when a test failed, =always also when none did: to read what happened before teardown.
KEEP_STACK = os.environ.get("PGBACKUP_COMPOSE_KEEP", "")


class Secrets:
    """Fresh values for everything .env.example leaves to the user; never printed."""

    def __init__(self) -> None:
        self.admin_password = secrets.token_urlsafe(16)
        self.source_password = secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def made():
    return Secrets()


@pytest.fixture(scope="module")
def smtp_inbox():
    """An SMTP server on 127.0.0.1 for the alerts: the containers share the host's network and reach it."""
    from aiosmtpd.controller import Controller

    from loopback import free_port

    class Inbox:
        def __init__(self) -> None:
            self.messages: list[str] = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(envelope.content.decode("utf-8", errors="replace"))
            return "250 OK"

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, inbox
    controller.stop()


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory, made, smtp_inbox):
    workdir = tmp_path_factory.mktemp("compose")
    daemon = DockerDaemon(workdir)
    reason = daemon.unavailable_reason()
    if reason:
        pytest.skip(f"the compose stack cannot run here: {reason}")
    started = time.monotonic()
    StandinImages(workdir).build()
    images_took = time.monotonic() - started
    smtp_port, _ = smtp_inbox
    stack = ComposeStack({
        "AIRFLOW_CONN_BACKUP_SOURCE": f"postgresql://postgres:{made.source_password}@127.0.0.1:{SOURCE_PORT}/shop",
        "AIRFLOW_CONN_BACKUP_REMOTE": json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": "/opt/airflow/backups/offsite-test"}}),
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port,
                                                 "extra": {"disable_tls": True, "disable_ssl": True, "timeout": 10, "from_email": "backups@example.test"}}),
        "BACKUP_ALERT_EMAILS": ALERT_TO,
        "BACKUP_TASK_RETRIES": "0",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(48),
        "_AIRFLOW_WWW_USER_USERNAME": ADMIN,
        "_AIRFLOW_WWW_USER_PASSWORD": made.admin_password,
        # Not named anywhere in docker-compose.yaml: reaches the containers through env_file only.
        "AIRFLOW__API__BASE_URL": "http://localhost:28080",
        "TEST_SOURCE_PASSWORD": made.source_password,
    })
    try:
        stack.up()
        stack.timings["stand-in images"] = images_took
        print("\ncompose stack timings: " + ", ".join(f"{step} {seconds:.0f}s" for step, seconds in stack.timings.items()))
        if changes := uncommitted_changes():
            print(f"the image holds {len(changes)} file(s) not committed in the checkout: {', '.join(changes[:20])}")
        yield stack
    except Exception:
        print(stack.logs())
        raise
    finally:
        if KEEP_STACK == "always" or (KEEP_STACK == "failed" and request.session.testsfailed):
            print(f"\nPGBACKUP_COMPOSE_KEEP: the stack is left running; end it with\n  {stack.down_command()}"
                  + (f"\n  kill {daemon.proc.pid}  # the dockerd the test started" if daemon.proc else ""))
        else:
            stack.down()
            daemon.stop()


@pytest.fixture(scope="module")
def api(stack, made) -> RestApi:
    api = RestApi()
    assert api.sign_in(ADMIN, made.admin_password) in (200, 201)
    return api


def source(made, dbname: str = "shop") -> PgTarget:
    return PgTarget(dbname=dbname, host="127.0.0.1", port=SOURCE_PORT, user="postgres", password=made.source_password)


def backups(stack) -> list[dict]:
    listed = stack.exec("airflow-scheduler", "backupctl", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def test_the_admin_signs_in_with_the_password_set_in_env(api, made):
    assert RestApi().sign_in(ADMIN, made.admin_password + "x") in (401, 403)
    status, version = api.request("GET", "/api/v2/version")
    assert status == 200 and version["version"] == "3.3.2"


def test_the_four_dags_load_without_import_errors(api):
    status, errors = api.request("GET", "/api/v2/importErrors")
    assert status == 200 and errors["import_errors"] == []
    status, dags = api.request("GET", "/api/v2/dags")
    assert {dag["dag_id"] for dag in dags["dags"]} >= DAG_IDS


def test_a_setting_put_only_in_env_reaches_the_containers(stack):
    for service in ("airflow-scheduler", "airflow-apiserver"):
        answer = stack.exec(service, "airflow", "config", "get-value", "api", "base_url")
        assert answer.stdout.strip() == "http://localhost:28080", (service, answer.stderr)


def test_the_image_is_consistent_and_carries_no_test_tools(stack):
    checked = stack.exec("airflow-scheduler", "pip", "check")
    assert checked.returncode == 0, checked.stdout
    probe = "import importlib.util as u; print([m for m in ('pytest', 'aiosmtpd', 'playwright') if u.find_spec(m)])"
    assert stack.exec("airflow-scheduler", "python", "-c", probe).stdout.strip() == "[]"


def test_a_full_backup_triggered_through_the_rest_api_succeeds(stack, api, made):
    # The first deploy's own runs (each DAG's latest interval) back up the empty shop; seeding it while they
    # capture would race their snapshot with DDL (which fails a capture, by design): let them end first.
    api.wait_until_idle(sorted(DAG_IDS))
    conn = source(made).connect()
    seed_sample_shop(conn)
    conn.close()
    run_id = api.trigger("pg_full_backup")
    assert api.wait_for_run("pg_full_backup", run_id) == "success"
    assert any(b["kind"] == "full" for b in backups(stack))


def test_an_incremental_backup_triggered_through_the_rest_api_succeeds(stack, api, made):
    conn = source(made).connect()
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE customer SET last_name = last_name || '-changed' WHERE id % 7 = 0")
        cur.execute("DELETE FROM stock_movement WHERE id % 11 = 0")
    conn.close()
    run_id = api.trigger("pg_incremental_backup")
    assert api.wait_for_run("pg_incremental_backup", run_id) == "success"
    assert any(b["kind"] == "incremental" for b in backups(stack))


def test_backupctl_status_list_and_restore_dry_run_work_inside_the_scheduler(stack, made):
    newest = backups(stack)[-1]
    status = stack.exec("airflow-scheduler", "backupctl", "status")
    assert newest["id"] in status.stdout, status.stdout + status.stderr
    listed = stack.exec("airflow-scheduler", "backupctl", "list")
    assert listed.returncode == 0 and newest["id"] in listed.stdout
    plan = stack.exec("airflow-scheduler", "backupctl", "restore", "--dry-run",
                      "--to", f"postgresql://postgres@127.0.0.1:{SOURCE_PORT}/shop_restored",
                      env={"PGPASSWORD": made.source_password})
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert newest["id"] in plan.stdout


def test_a_restore_from_inside_the_stack_gives_back_the_source_database(stack, made):
    admin = psycopg2.connect(host="127.0.0.1", port=SOURCE_PORT, user="postgres", password=made.source_password, dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("CREATE DATABASE shop_restored")
    admin.close()
    restored = stack.exec("airflow-scheduler", "backupctl", "restore",
                          "--to", f"postgresql://postgres@127.0.0.1:{SOURCE_PORT}/shop_restored",
                          env={"PGPASSWORD": made.source_password})
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert database_content(source(made, "shop_restored")) == database_content(source(made))


def test_the_admin_password_survives_a_recreated_api_server(stack, made):
    stack.compose("up", "-d", "--wait", "--wait-timeout", "300", "--force-recreate", "--no-deps", "airflow-apiserver")
    assert RestApi().sign_in(ADMIN, made.admin_password) in (200, 201)


def alert_texts(messages: list[str]) -> list[str]:
    """Each alert e-mail's subject and text, decoded: what a failing assertion should show."""
    import email
    from email import policy

    texts = []
    for raw in messages:
        message = email.message_from_string(raw, policy=policy.default)
        body = message.get_body(preferencelist=("plain", "html"))
        texts.append(f"{message['Subject']}: {body.get_content() if body else ''}"[:2000])
    return texts


def test_a_first_deploy_raises_no_alert_and_status_is_clean_after_its_first_backups(stack, smtp_inbox):
    _, inbox = smtp_inbox
    status = stack.exec("airflow-scheduler", "backupctl", "status")
    assert inbox.messages == [], "\n".join([*alert_texts(inbox.messages), "task errors:", stack.task_errors()])
    assert status.returncode == 0, status.stdout


def test_a_failed_backup_is_alerted_by_e_mail(stack, api, smtp_inbox):
    _, inbox = smtp_inbox
    already = len(inbox.messages)
    stack.compose("stop", "source-postgres")
    run_id = api.trigger("pg_incremental_backup")
    assert api.wait_for_run("pg_incremental_backup", run_id) == "failed"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any("pg_incremental_backup" in m for m in inbox.messages[already:]):
        time.sleep(1)
    alerts = [m for m in inbox.messages[already:] if "pg_incremental_backup" in m]
    assert alerts and f"To: {ALERT_TO}" in alerts[0]
