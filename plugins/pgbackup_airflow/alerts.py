"""Failure alerts for every backup DAG, and the staleness check that turns "no recent backup" into a failure.

Every DAG puts ``failure_notifiers(settings)`` in its ``default_args`` as
``on_failure_callback``, so any task that fails for good sends one message
naming the DAG, the task, the backup (when known), the error line and the log
link.  The staleness check fails its task instead of sending anything itself:
one alert path to configure and to test.

Settings read here from the environment (until they move into settings.py):
``BACKUP_SMTP_CONN_ID`` (smtp_default), ``BACKUP_ALERT_FROM`` (the SMTP
connection's ``from_email``, else pgbackup@localhost), ``BACKUP_ALERT_WEBHOOK_URL``
(empty: off).  Recipients are ``settings.alert_emails`` (``BACKUP_ALERT_EMAILS``).
"""

from __future__ import annotations

import html
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseNotifier, BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from pgbackup.config.settings import BackupSettings
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from pgbackup.policy.staleness import duration_text, restorable_backups, staleness_warnings
from pgbackup.restore.drill import IN_FLIGHT_GRACE, catalog_never_used, first_backup_in_flight
from pgbackup_airflow import metrics
from pgbackup_airflow.connections import source_identity
from rclone_provider.hooks.rclone import RcloneHook

DEFAULT_FROM = "pgbackup@localhost"


def failure_notifiers(settings: BackupSettings) -> list[BaseNotifier]:
    """The ``on_failure_callback`` list for a DAG's ``default_args``: e-mail when recipients are set, webhook when a URL is."""
    notifiers: list[BaseNotifier] = []
    if settings.alert_emails:
        notifiers.append(BackupFailureEmail(to=list(settings.alert_emails), from_email=settings.alert_from, smtp_conn_id=settings.smtp_conn_id))
    if settings.alert_webhook_url:
        notifiers.append(WebhookNotifier(settings.alert_webhook_url))
    return notifiers


@dataclass(frozen=True)
class FailureReport:
    """What every channel says about one failed task, taken from the task's context."""

    dag_id: str
    task_id: str
    run_id: str
    try_number: int | None
    backup_id: str | None
    error: str
    log_url: str
    database: str | None = None  # the mapped instance's database; None for a task that is not mapped

    @classmethod
    def from_context(cls, context: Any) -> FailureReport:
        ti = context["ti"]
        return cls(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            try_number=getattr(ti, "try_number", None),
            backup_id=_backup_id(context),
            error=_error_line(context.get("exception")),
            log_url=_log_url(ti),
            database=_database(context),
        )

    @property
    def subject(self) -> str:
        where = f" [{self.database}]" if self.database else ""
        return f"[pgbackup] FAILED {self.dag_id}.{self.task_id}{where}"

    def lines(self) -> list[tuple[str, str]]:
        lines = [
            ("DAG", self.dag_id),
            ("Task", self.task_id),
            ("Database", self.database),
            ("Run", f"{self.run_id} (try {self.try_number})" if self.try_number else self.run_id),
            ("Backup", self.backup_id),
            ("Error", self.error),
            ("Log", self.log_url),
        ]
        return [(label, value) for label, value in lines if value]

    def text(self) -> str:
        return "\n".join([self.subject, *(f"{label}: {value}" for label, value in self.lines())])

    def html(self) -> str:
        rows = "".join(
            f"<tr><th align='left'>{label}</th><td>{_html_value(label, value)}</td></tr>" for label, value in self.lines()
        )
        return f"<p>{html.escape(self.subject)}</p><table>{rows}</table>"


def _html_value(label: str, value: str) -> str:
    if label == "Log":
        return f'<a href="{html.escape(value, quote=True)}">{html.escape(value)}</a>'
    return html.escape(value)


def _error_line(error: BaseException | str | None) -> str:
    """The first line of the error: enough to triage from the inbox, the log has the rest."""
    if error is None:
        return "unknown (see the log)"
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return first or type(error).__name__


def _backup_id(context: Any) -> str | None:
    """The ``backup_id`` XCom of a task upstream of the failed one (the capture task), else a ``backup_id`` param.

    Never raises: a missing or unreadable XCom must not cost the alert.
    """
    ti, task = context["ti"], context.get("task")
    try:
        upstream = sorted(task.get_flat_relative_ids(upstream=True)) if task is not None else []
        for value in ti.xcom_pull(task_ids=upstream, key="backup_id") if upstream else []:
            if value:
                return str(value)
    except Exception:
        pass
    params = context.get("params") or {}
    return str(params["backup_id"]) if params.get("backup_id") else None


def _database(context: Any) -> str | None:
    """Which database a mapped instance served: its rendered map index (``map_index_template``), else the index."""
    ti, task = context["ti"], context.get("task")
    index = getattr(ti, "map_index", -1)
    if index is None or index < 0:
        return None
    if getattr(ti, "rendered_map_index", None):
        return str(ti.rendered_map_index)
    template = getattr(task, "map_index_template", None)
    try:
        return str(task.render_template(template, context)) if template else str(index)
    except Exception:
        return str(index)


def _log_url(ti: Any) -> str:
    """The task instance's own ``log_url`` (from ``[api] base_url`` / ``AIRFLOW__API__BASE_URL``), else built the same way."""
    url = getattr(ti, "log_url", None)
    if url:
        return url
    base = os.environ.get("AIRFLOW__API__BASE_URL", "").strip() or "http://localhost:8080/"
    return f"{base.rstrip('/')}/dags/{ti.dag_id}/runs/{urllib.parse.quote(ti.run_id)}/tasks/{ti.task_id}"


class BackupFailureEmail(SmtpNotifier):
    """The SMTP provider's notifier with our subject and body, built per call.

    Built in ``notify`` rather than as templates: the error text may contain
    ``{{`` and must not go through Jinja, and one notifier instance serves
    every task of the DAG, so nothing call-specific is stored on it.
    """

    def notify(self, context: Any) -> None:
        report = FailureReport.from_context(context)
        with self.hook as smtp:
            smtp.send_email_smtp(
                to=self.to,
                from_email=self.from_email or smtp.from_email or DEFAULT_FROM,
                subject=report.subject,
                html_content=report.html(),
                mime_charset=self.mime_charset,
            )
        self.log.info("Failure alert for %s.%s e-mailed to %s", report.dag_id, report.task_id, ", ".join(self.to))


class WebhookNotifier(BaseNotifier):
    """POST ``{"text": ...}`` (what Slack, Mattermost and Rocket.Chat incoming webhooks take) with the standard library.

    The URL is the webhook's secret: it is not a template field and never logged.
    """

    def __init__(self, url: str, timeout: float = 10) -> None:
        super().__init__()
        self._url = url
        self.timeout = timeout

    def notify(self, context: Any) -> None:
        report = FailureReport.from_context(context)
        request = urllib.request.Request(
            self._url, data=json.dumps({"text": report.text()}).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise RuntimeError(f"alert webhook refused the message: {getattr(exc, 'reason', None) or type(exc).__name__}") from None
        self.log.info("Failure alert for %s.%s posted to the webhook", report.dag_id, report.task_id)


class BackupStalenessOperator(BaseOperator):
    """Fail, and so alert, when the remote catalog's newest restorable backup or full is older than the limits.

    Reads the remote itself rather than Airflow's run history: a backup that
    succeeded in Airflow but is not on the remote does not count.  A stale
    catalog fails without retries (retrying cannot make a backup appear); an
    unreadable remote fails like any task, with the DAG's retries.
    """

    def __init__(self, *, rclone_conn_id: str, prefix: str, rpo: timedelta, grace: timedelta, max_full_age: timedelta,
                 source_conn_id: str = "backup_source", database: str | None = None, in_flight: timedelta = IN_FLIGHT_GRACE,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.database = database
        self.in_flight = in_flight  # how long the first backup's objects may wait for its manifest (catalog_never_used)
        self.rclone_conn_id = rclone_conn_id
        self.prefix = prefix
        self.source_conn_id = source_conn_id
        self.rpo, self.grace, self.max_full_age = rpo, grace, max_full_age

    def execute(self, context) -> dict[str, Any]:
        # Only this source's backups count: another installation's fresh backup must not hide that ours stopped.
        identity = source_identity(self.source_conn_id)
        loaded = Catalog.load(RcloneHook(self.rclone_conn_id).get_conn(), BackupLayout(self.prefix))
        if catalog_never_used(loaded, in_flight=self.in_flight):
            # A first deploy: the check has nothing to watch yet.  Skipped, not failed: no alert on a healthy new install.
            self.log.info("No backup has been taken under %s/ yet: nothing to check until the first backup lands%s",
                          self.prefix, first_backup_in_flight(loaded))
            raise AirflowSkipException(f"{self.prefix}: no backup has been taken yet (first deploy): nothing to check")
        catalog = loaded.for_source(identity)
        for problem in catalog.problems:
            self.log.warning("Catalog problem: %s", problem)
        if catalog.foreign_warning():
            self.log.warning("%s", catalog.foreign_warning())
        backups = restorable_backups(catalog)
        now = datetime.now(timezone.utc)
        if backups:
            metrics.newest_backup_age(self.database or self.prefix, now - backups[-1].finished_at)
        warnings = staleness_warnings(backups, now, self.rpo, self.grace, self.max_full_age)
        if warnings:
            raise AirflowFailException(f"{self.prefix}: " + "; ".join(warnings))
        newest = backups[-1]  # chain order: see pgbackup.model.catalog
        newest_full = [m for m in backups if m.kind == "full"][-1]
        self.log.info(
            "Fresh: newest backup %s finished %s ago, newest full %s %s ago (limits: RPO %s + %s grace, full %s)",
            newest.id, duration_text(now - newest.finished_at), newest_full.id, duration_text(now - newest_full.finished_at),
            duration_text(self.rpo), duration_text(self.grace), duration_text(self.max_full_age),
        )
        return {"newest": newest.id, "newest_full": newest_full.id}
