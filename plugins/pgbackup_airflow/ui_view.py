"""The Backups page's view model: what the page shows, computed from ``collect_status``'s report.

Pure (no Airflow, no FastAPI): a report dict in, the template's context out,
every time in the configured zone and every size in human units.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from pgbackup.config.settings import BackupSettings
from pgbackup.model.manifest import utc_iso
from pgbackup.report.humanize import human_bytes
from pgbackup.report.status import next_run, schedules


def parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def local_time(text: str | None, tz: str) -> str:
    moment = parse_iso(text)
    return moment.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z") if moment else "-"


def relative(text: str | None, now: datetime) -> str:
    """``3 h ago`` / ``in 2 d``: how far ``text`` is from ``now``, roughly."""
    moment = parse_iso(text)
    if moment is None:
        return ""
    seconds = (moment - now).total_seconds()
    span = abs(seconds)
    for limit, unit, size in ((90, "s", 1), (90 * 60, "min", 60), (36 * 3600, "h", 3600), (float("inf"), "d", 86400)):
        if span < limit:
            amount = f"{span / size:.0f} {unit}"
            break
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def page_context(report: dict[str, Any], *, tz: str, can_trigger: dict[str, bool], airflow_base: str,
                 error: str | None = None, user: str | None = None) -> dict[str, Any]:
    """What the template shows, computed from ``collect_status``'s report (the charts beside it: :mod:`pgbackup_airflow.ui_chart`)."""
    now = parse_iso(report.get("now")) or datetime.now(timezone.utc)
    drill = report.get("drill")
    backups = []
    for b in report.get("backups", []):
        row = {**b, "time": local_time(b["finished_at"], tz), "ago": relative(b["finished_at"], now),
               "size": human_bytes(b["bytes"]), "drill": None}
        if drill and drill.get("backup_id") == b["id"]:
            row["drill"] = drill
        backups.append(row)
    dags = []
    for dag_id, d in report.get("dags", {}).items():
        dags.append({
            "dag_id": dag_id, **d,
            "next": local_time(d.get("next_run"), tz), "next_in": relative(d.get("next_run"), now),
            "success": local_time(d.get("last_success"), tz), "failure": local_time(d.get("last_failure"), tz),
            "can_trigger": can_trigger.get(dag_id, False),
            "dag_url": f"{airflow_base}/dags/{dag_id}",
        })
    storage = report.get("storage") or {}
    return {
        "report": report, "tz": tz, "now": local_time(report.get("now"), tz), "backups": backups, "dags": dags,
        "storage": storage, "human_bytes": human_bytes, "error": error, "user": user,
        "drill": drill and {**drill, "time": local_time(drill.get("at"), tz), "ago": relative(drill.get("at"), now)},
        "local": report.get("local"), "warnings": report.get("warnings", []),
        "api_base": f"{airflow_base}/api/v2", "airflow_base": airflow_base,
    }


def empty_report(settings: BackupSettings, now: datetime | None = None) -> dict[str, Any]:
    """The report of a catalog that cannot be read (the page says why): schedules and next runs only."""
    now = now or datetime.now(timezone.utc)
    return {
        "now": utc_iso(now), "remote": "?", "backups": [], "storage": {}, "local": None, "drill": None,
        "warnings": [], "airflow": False,
        "dags": {dag_id: {"schedule": cron, "timezone": settings.timezone,
                          "next_run": utc_iso(next_run(cron, settings.timezone, now)),
                          "last_success": None, "last_failure": None, "paused": None}
                 for dag_id, cron in schedules(settings).items()},
    }
