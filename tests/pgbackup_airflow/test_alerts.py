"""Alerts: the staleness rule at its boundaries, and real DAG runs that mail a loopback SMTP server and post to a loopback webhook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import PROJECT, airflow_cli, smtp_connection_env
from factories import manifest
from pgbackup.config.settings import BackupSettings, SettingsError
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from pgbackup.policy.staleness import duration_text, restorable_backups, staleness_warnings
from rclone_provider.client import Rclone

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
RPO, GRACE, MAX_FULL = timedelta(hours=6), timedelta(hours=1), timedelta(days=8)
STALENESS_TASK = "pg_backup_staleness.check_backup_freshness"
API_BASE = "http://airflow.example.test:8080"


def finished(kind: str, before_now: timedelta, **kwargs):
    """A manifest whose backup finished ``before_now`` before NOW (the factory finishes one minute after the start)."""
    return manifest(kind, NOW - before_now - timedelta(minutes=1), **kwargs)


# ---------------------------------------------------------------- the rule


def warnings(*backups):
    return staleness_warnings(backups, NOW, RPO, GRACE, MAX_FULL)


def test_a_backup_exactly_at_rpo_plus_grace_is_still_fresh_one_second_more_is_stale():
    full = finished("full", timedelta(days=1))
    assert warnings(full, finished("incremental", RPO + GRACE, parent=full)) == []
    (line,) = warnings(full, finished("incremental", RPO + GRACE + timedelta(seconds=1), parent=full))
    assert line.startswith("no successful backup since 2026-03-10T04:59:59Z (7h 1s ago, ")
    assert line.endswith("over the RPO of 6h + 1h grace")


def test_the_newest_by_finish_time_counts_whatever_its_kind():
    old_full = finished("full", timedelta(days=2))
    assert warnings(old_full)[0].startswith("no successful backup since 2026-03-08T12:00:00Z (2d ago, ")
    assert warnings(old_full, finished("full", timedelta(hours=1))) == []
    assert warnings(old_full, finished("incremental", timedelta(hours=1), parent=old_full)) == []


def test_a_full_exactly_max_age_old_is_fine_older_is_reported_even_with_fresh_incrementals():
    full = finished("full", MAX_FULL)
    assert warnings(full, finished("incremental", timedelta(hours=2), parent=full)) == []
    old = finished("full", MAX_FULL + timedelta(minutes=1))
    (line,) = warnings(old, finished("incremental", timedelta(hours=2), parent=old))
    assert line == f"no full backup for more than 8d: the newest, {old.id}, finished 2026-03-02T11:59:00Z (8d 1m ago)"


def test_both_limits_broken_gives_both_lines():
    lines = warnings(finished("full", timedelta(days=9)))
    assert [line.split(" ")[:3] for line in lines] == [["no", "successful", "backup"], ["no", "full", "backup"]]


def test_an_empty_catalog_is_stale():
    assert warnings() == ["no successful backup in the catalog at all (RPO 6h + 1h grace)"]


def test_only_restorable_backups_reset_the_clock(local_remote):
    """A fresh incremental whose parent is gone, or whose object is missing, is not a successful backup."""
    root = Path(local_remote.root)
    full = finished("full", timedelta(days=2))
    orphaned = finished("incremental", timedelta(hours=1), parent=finished("full", timedelta(days=3)))
    missing_object = finished("incremental", timedelta(minutes=30), parent=full)
    for m, with_object in ((full, True), (orphaned, True), (missing_object, False)):
        store_backup(root, m, with_object=with_object)
    catalog = Catalog.load(Rclone(local_remote), BackupLayout("database"))
    assert [m.id for m in restorable_backups(catalog)] == [full.id]
    assert warnings(*restorable_backups(catalog))[0].startswith("no successful backup since")


def test_a_backup_finishing_after_now_clock_skew_is_fresh():
    assert warnings(finished("full", -timedelta(minutes=5))) == []


def test_durations_read_like_the_settings():
    assert [duration_text(d) for d in (timedelta(days=8), timedelta(hours=7, seconds=1), timedelta(0), timedelta(minutes=-5))] == [
        "8d", "7h 1s", "0s", "-5m"
    ]


# ---------------------------------------------------------------- which notifiers


def test_no_recipients_and_no_webhook_means_no_notifiers():
    from pgbackup_airflow.alerts import failure_notifiers

    assert failure_notifiers(BackupSettings.from_env({})) == []


def test_a_webhook_url_that_is_not_http_is_refused_without_echoing_it():
    with pytest.raises(SettingsError) as raised:
        BackupSettings.from_env({"BACKUP_ALERT_WEBHOOK_URL": "file:///etc/SECRET-TOKEN"})
    assert "BACKUP_ALERT_WEBHOOK_URL" in str(raised.value) and "SECRET-TOKEN" not in str(raised.value)


# ---------------------------------------------------------------- real runs, real servers


@pytest.fixture
def webhook_server():
    """An HTTP server on 127.0.0.1 that records every POSTed JSON body and answers 200."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/SECRET", received
    server.shutdown()
    server.server_close()


def store_backup(remote_root: Path, backup, *, with_object: bool = True) -> None:
    """Commit a synthetic backup to a local remote: its manifest, and an object of the manifest's size beside it."""
    folder = remote_root / backup.artifact.path.rsplit("/", 1)[0]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{backup.id}.manifest.json").write_bytes(backup.to_json())
    if with_object:
        (remote_root / backup.artifact.path).write_bytes(b"x" * backup.artifact.bytes)


def alert_env(remote_root: Path, smtp_port: int, **extra) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_CONN_BACKUP_REMOTE": json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": str(remote_root)}}),
        **smtp_connection_env(smtp_port),
        "AIRFLOW__API__BASE_URL": API_BASE,
        "BACKUP_ALERT_EMAILS": "ops@example.com",
        **extra,
    }


def dags_test(dag_id: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([airflow_cli(), "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=300)


def only_mail(inbox):
    (envelope,) = inbox.envelopes
    message = message_from_bytes(envelope.content, policy=policy.default)
    return envelope, message, message.get_body(("html",)).get_content()


@pytest.mark.airflow
def test_staleness_run_when_backups_stopped_fails_and_mails_the_alert(airflow_home, smtp_server, tmp_path):
    # (an empty remote is a first deploy: the check skips, see tests/dags/test_first_deploy.py)
    controller, inbox = smtp_server
    remote = tmp_path / "remote"
    stopped = manifest("full", datetime.now(timezone.utc) - timedelta(days=3), size=123)
    store_backup(remote, stopped)
    result = dags_test("pg_backup_staleness", alert_env(remote, controller.port))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    envelope, message, body = only_mail(inbox)
    assert envelope.mail_from == "pgbackup@localhost" and envelope.rcpt_tos == ["ops@example.com"]
    assert message["Subject"] == f"[pgbackup] FAILED {STALENESS_TASK} [database]"
    assert "pg_backup_staleness" in body and "check_backup_freshness" in body
    assert "no successful backup since" in body and stopped.id in body and "over the RPO of 6h + 1h grace" in body
    assert f'<a href="{API_BASE}/dags/pg_backup_staleness/runs/' in body and "/tasks/check_backup_freshness" in body


@pytest.mark.airflow
def test_staleness_run_with_a_fresh_backup_passes_and_mails_nothing(airflow_home, smtp_server, tmp_path):
    controller, inbox = smtp_server
    remote = tmp_path / "remote"
    fresh = manifest("full", datetime.now(timezone.utc) - timedelta(hours=2), size=123)
    store_backup(remote, fresh)
    result = dags_test("pg_backup_staleness", alert_env(remote, controller.port))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert f"Fresh: newest backup {fresh.id}" in result.stdout + result.stderr
    assert inbox.envelopes == []


FAILING_PIPELINE_DAG = '''
import pendulum
from airflow.sdk import DAG, task
from pgbackup.config.settings import BackupSettings
from pgbackup_airflow.alerts import failure_notifiers

with DAG(dag_id="alerts_probe_pipeline", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False,
         default_args={"retries": 0, "on_failure_callback": failure_notifiers(BackupSettings.from_env())}):

    @task(task_id="dump_compress_checksum", multiple_outputs=True)
    def capture():
        return {"backup_id": "20260310T020000Z-full", "bytes": 1}

    @task(task_id="upload")
    def upload(backup_id):
        raise RuntimeError("rclone copyto failed: 403 Forbidden {{ not a template }}\\nsecond line stays in the log")

    upload(capture()["backup_id"])
'''


@pytest.mark.airflow
def test_a_failure_after_capture_names_the_backup_in_the_mail_and_the_webhook(airflow_home, smtp_server, webhook_server, tmp_path):
    """A stand-in for a backup DAG (the capture task's id and XComs, no database) in a DAG folder of its own.

    Its own folder because ``dags test -f`` only takes files inside the configured DAG bundle.
    """
    controller, inbox = smtp_server
    url, posted = webhook_server
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "alerts_probe_pipeline.py").write_text(FAILING_PIPELINE_DAG)
    env = alert_env(tmp_path / "remote", controller.port, BACKUP_ALERT_WEBHOOK_URL=url, BACKUP_ALERT_FROM="backups@example.com",
                    AIRFLOW__CORE__DAGS_FOLDER=str(tmp_path / "dags"))
    result = dags_test("alerts_probe_pipeline", env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    envelope, message, body = only_mail(inbox)
    assert envelope.mail_from == "backups@example.com"
    assert message["Subject"] == "[pgbackup] FAILED alerts_probe_pipeline.upload"
    assert "20260310T020000Z-full" in body
    assert "rclone copyto failed: 403 Forbidden {{ not a template }}" in body and "second line" not in body
    (post,) = posted
    text = post["text"]
    assert text.splitlines()[0] == "[pgbackup] FAILED alerts_probe_pipeline.upload"
    assert "Backup: 20260310T020000Z-full" in text and "Error: rclone copyto failed: 403 Forbidden" in text
    assert f"Log: {API_BASE}/dags/alerts_probe_pipeline/runs/" in text
    # the webhook URL is a secret: never in the output or the task logs
    logs = output + "".join(p.read_text(errors="replace") for p in (airflow_home / "logs").rglob("*") if p.is_file())
    assert "SECRET" not in logs


PROBE = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=%r)
dag = bag.dags.get("pg_backup_staleness")
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "dag": dag and {"cron": dag.timetable.expression, "tz": str(dag.timetable.timezone), "catchup": dag.catchup,
                                  "callbacks": [type(c).__name__ for t in dag.tasks for c in t.on_failure_callback],
                                  "limits": [str(t.partial_kwargs[k]) for t in dag.tasks for k in ("rpo", "grace", "max_full_age")]}}))
"""


def load_staleness_dag(**env):
    out = subprocess.run([sys.executable, "-c", PROBE % str(PROJECT / "dags" / "pg_backup_staleness.py")],
                         env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_staleness_dag_runs_hourly_in_the_backup_timezone_with_the_settings_limits_and_alerts_when_recipients_are_set():
    loaded = load_staleness_dag(BACKUP_TIMEZONE="Europe/Berlin", BACKUP_ALERT_EMAILS="ops@example.com", BACKUP_RPO="24h")
    assert loaded["errors"] == {}
    assert loaded["dag"] == {
        "cron": "0 * * * *", "tz": "Europe/Berlin", "catchup": False, "callbacks": ["BackupFailureEmail"],
        "limits": ["1 day, 0:00:00", "1:00:00", "8 days, 0:00:00"],
    }



@pytest.mark.airflow
def test_a_missing_capture_pool_is_a_warning_that_says_what_to_run(airflow_home):
    probe = ("import airflow.settings; from pgbackup_airflow.history import missing_pool_warning as w; "
             "print(repr(w('pgbackup_never_created', 2))); print(repr(w('default_pool', 2)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout.splitlines()
    assert out == ['"Airflow pool \'pgbackup_never_created\' does not exist: no capture will ever start. '
                   'Create it: airflow pools set pgbackup_never_created 2 \'pg_dumps at once\'"', "None"]
