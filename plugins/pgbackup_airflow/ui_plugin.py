"""The **Backups** page in the Airflow UI: catalog, storage chart, schedules and trigger buttons.

An Airflow 3 plugin: a FastAPI app mounted by the api-server at ``/pgbackup``
and an external view that adds "Backups" to the navigation bar; the UI shows
the page in an iframe at ``/plugin/backups``.

Authentication and authorization are Airflow's own.  Airflow does not protect
plugin apps (a mounted app inherits none of the core API's dependencies), so
this app declares, for every route, the same dependency the core API uses for
reading a DAG: ``requires_access_dag("GET", pg_full_backup)``.  It resolves the
user from the ``Authorization: Bearer`` header or from the ``_token`` cookie the
UI's login sets (path ``/``, so the iframe's requests carry it) and asks the
configured auth manager.  No valid token: the page redirects to Airflow's login
(``next`` back to the page) and the JSON answers 401; a user who may not read
the backup DAGs gets 403.  Trigger buttons call Airflow's own REST API
(``POST /api/v2/dags/{dag_id}/dagRuns``) with the same cookie, so Airflow
decides who may start a run; the page only greys out the buttons of users the
auth manager would refuse.

The app is built on its first request: every Airflow process loads plugins,
and only the api-server needs FastAPI and the auth machinery.
"""

import html
import logging
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from airflow.plugins_manager import AirflowPlugin

from pgbackup.report.humanize import human_bytes

log = logging.getLogger(__name__)

URL_PREFIX = "/pgbackup"
UI_ROUTE = "backups"
GATE_DAG = "pg_full_backup"  # who may read this DAG may read the backup catalog
TEMPLATES = Path(__file__).with_name("templates")
KIND_COLORS = {"full": "#1d4ed8", "incremental": "#60a5fa"}


# ---------------------------------------------------------------------------------------------
# Pure rendering helpers (no Airflow, no FastAPI): tested directly.


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


def _nice_ceiling(value: float) -> float:
    """The smallest 1/2/2.5/5 × 2^10k-ish round number ≥ value, for axis tops."""
    if value <= 0:
        return 1.0
    unit = 1.0
    while value > unit * 1024 and unit < 1024 ** 4:
        unit *= 1024
    scaled = value / unit
    magnitude = 10 ** (len(str(int(scaled))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if scaled <= step * magnitude:
            return step * magnitude * unit
    return 10 * magnitude * unit


TICK_STEPS = [timedelta(hours=h) for h in (1, 2, 3, 6, 12)] + [timedelta(days=d) for d in (1, 2, 7, 14, 28, 56, 91, 182, 364)]


def time_ticks(start: datetime, end: datetime, zone: ZoneInfo, most: int = 8) -> list[tuple[datetime, str]]:
    """Round local times between ``start`` and ``end`` (at most ``most``), each with its label."""
    span = end - start
    step = next((s for s in TICK_STEPS if span / s <= most), TICK_STEPS[-1])
    local = start.astimezone(zone)
    if step < timedelta(days=1):
        hours = int(step.total_seconds() // 3600)
        tick = local.replace(hour=local.hour // hours * hours, minute=0, second=0, microsecond=0)
    else:
        tick = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if step >= timedelta(days=7):  # weeks start on Mondays
            tick -= timedelta(days=tick.weekday())
    ticks = []
    while tick <= end:
        if tick >= start:
            if step < timedelta(days=1):
                label = tick.strftime("%b %d") if tick.hour == 0 else tick.strftime("%H:%M")
            else:
                label = tick.strftime("%Y-%m-%d" if span > timedelta(days=400) else "%b %d")
            ticks.append((tick, label))
        tick = (tick + step).astimezone(zone)
    return ticks


def storage_chart_svg(backups: list[dict[str, Any]], now: datetime, tz: str, *, width: int = 960) -> str:
    """Two panels sharing a time axis: each backup's size (bars), and the bytes on the remote (step line).

    ``backups`` are the catalog rows of ``collect_status`` (``finished_at``, ``bytes``, ``kind``, ``id``).
    The storage line is the running total of the backups stored now, by the time each was written:
    what retention deleted earlier is no longer known, so the line shows today's holdings building up.
    """
    esc = html.escape
    rows = sorted((b for b in backups if b.get("finished_at")), key=lambda b: b["finished_at"])
    if not rows:
        return ('<svg class="chart" role="img" aria-label="No backups yet" viewBox="0 0 %d 60" width="100%%">'
                '<text x="%d" y="35" text-anchor="middle" class="muted">No backups yet: nothing to chart.</text></svg>'
                % (width, width // 2))
    zone = ZoneInfo(tz)
    times = [parse_iso(b["finished_at"]) for b in rows]
    start, end = min(times), max(max(times), now)
    if end - start < timedelta(hours=12):
        start -= timedelta(hours=6)
        end += timedelta(hours=6)
    pad = (end - start) * 0.03
    start, end = start - pad, end + pad
    left, right, top, panel, gap, axis = 78, 24, 26, 130, 46, 26
    plot_w = width - left - right
    height = top + panel + gap + panel + axis

    def x(moment: datetime) -> float:
        return left + plot_w * (moment - start).total_seconds() / (end - start).total_seconds()

    out = [f'<svg class="chart" role="img" aria-label="Backup size and remote storage over time" '
           f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" '
           f'xmlns="http://www.w3.org/2000/svg">']

    def frame(y0: int, title: str, top_value: float) -> None:
        out.append(f'<text x="{left}" y="{y0 - 8}" class="chart-title">{esc(title)}</text>')
        for fraction in (0, 0.5, 1):
            y = y0 + panel - panel * fraction
            out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{esc(human_bytes(top_value * fraction))}</text>')

    # panel 1: one bar per backup
    sizes_top = _nice_ceiling(max(b["bytes"] for b in rows))
    frame(top, "Size of each backup", sizes_top)
    bar_w = max(2.0, min(14.0, plot_w / max(len(rows), 1) * 0.6))
    for b, moment in zip(rows, times):
        h = max(1.0, panel * b["bytes"] / sizes_top)
        cx = x(moment)
        out.append(
            f'<rect x="{cx - bar_w / 2:.1f}" y="{top + panel - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
            f'fill="{KIND_COLORS.get(b["kind"], "#888")}" class="bar bar-{esc(b["kind"])}">'
            f'<title>{esc(b["id"])}: {esc(b["kind"])}, {esc(human_bytes(b["bytes"]))}, '
            f'{esc(local_time(b["finished_at"], tz))}</title></rect>'
        )

    # panel 2: running total on the remote
    y2 = top + panel + gap
    total, points = 0, []
    for b, moment in zip(rows, times):
        points.append((x(moment), total))
        total += b["bytes"]
        points.append((x(moment), total))
    points.append((x(max(now, times[-1])), total))
    storage_top = _nice_ceiling(total)
    frame(y2, "Stored on the remote (running total of the backups kept now)", storage_top)

    def yv(value: float) -> float:
        return y2 + panel - panel * value / storage_top

    line = " ".join(f"{px:.1f},{yv(v):.1f}" for px, v in points)
    area = f"{points[0][0]:.1f},{y2 + panel} {line} {points[-1][0]:.1f},{y2 + panel}"
    out.append(f'<polygon points="{area}" class="area"/>')
    out.append(f'<polyline points="{line}" class="line"><title>{esc(human_bytes(total))} stored now</title></polyline>')
    out.append(f'<circle cx="{points[-1][0]:.1f}" cy="{yv(total):.1f}" r="3.5" class="dot"/>')
    out.append(f'<text x="{points[-1][0] - 6:.1f}" y="{yv(total) - 8:.1f}" text-anchor="end" class="tick strong">{esc(human_bytes(total))}</text>')

    # shared time axis, ticks on round local times
    axis_y = y2 + panel
    for moment, label in time_ticks(start, end, zone):
        px = x(moment)
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{axis_y}" y2="{axis_y + 4}" class="grid"/>')
        tx = min(max(px, left + 18), left + plot_w - 18)
        out.append(f'<text x="{tx:.1f}" y="{axis_y + 17}" text-anchor="middle" class="tick">{esc(label)}</text>')
    now_x = x(now)
    for y0 in (top, y2):
        out.append(f'<line x1="{now_x:.1f}" x2="{now_x:.1f}" y1="{y0}" y2="{y0 + panel}" class="now"><title>now</title></line>')

    # legend
    lx = left + plot_w - 250
    for i, (kind, color) in enumerate(KIND_COLORS.items()):
        out.append(f'<rect x="{lx + i * 110}" y="{top - 19}" width="11" height="11" fill="{color}"/>'
                   f'<text x="{lx + i * 110 + 16}" y="{top - 9}" class="tick">{kind}</text>')
    out.append("</svg>")
    return "".join(out)


def growth_chart_svg(growth: dict[str, Any] | None, *, width: int = 960) -> str:
    """Stored bytes per week so far (bars) and the 12 months' projection under retention (line), against the quota (dashed).

    ``growth`` is ``pgbackup.report.growth.GrowthReport.to_dict()`` as ``collect_status`` reports it.
    """
    esc = html.escape
    if not growth or growth.get("reason") or not growth.get("months"):
        reason = (growth or {}).get("reason") or "no backups yet"
        return ('<svg class="chart growth" role="img" aria-label="No projection" viewBox="0 0 %d 60" width="100%%">'
                '<text x="%d" y="35" text-anchor="middle" class="muted">Storage projection: %s.</text></svg>'
                % (width, width // 2, esc(reason)))
    weeks, months = growth["weeks"], growth["months"]
    quota = growth.get("quota_total")
    left, right, top, height_plot, axis = 78, 24, 26, 170, 26
    plot_w, height = width - left - right, top + height_plot + axis
    # a slot per past week, then a slot per projected month
    slots = len(weeks) + len(months)
    slot_w = plot_w / max(slots, 1)
    peak = max([w["stored_bytes"] for w in weeks] + [m["stored_bytes"] + growth.get("other_used", 0) for m in months] + [1])
    scale_max = max(peak, quota or 0) if quota and quota < peak * 4 else peak
    base = top + height_plot

    def y(value: float) -> float:
        return base - height_plot * min(value / scale_max, 1.0)

    out = [f'<svg class="chart growth" role="img" aria-label="Storage per week and the 12-month projection" '
           f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{left}" y="{top - 9}" class="chart-title">Stored per week, and projected for {len(months)} months</text>',
           f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" class="tick">{esc(human_bytes(round(scale_max)))}</text>',
           f'<line x1="{left}" x2="{left + plot_w}" y1="{base}" y2="{base}" class="grid"/>']
    for i, w in enumerate(weeks):
        h = base - y(w["stored_bytes"])
        out.append(f'<rect class="week-bar" x="{left + i * slot_w + 1:.1f}" y="{base - h:.1f}" width="{max(slot_w - 2, 1):.1f}" height="{h:.1f}" '
                   f'fill="{KIND_COLORS["full"]}"><title>week of {esc(w["week"])}: {esc(human_bytes(w["stored_bytes"]))} stored, '
                   f'{esc(human_bytes(w["added_bytes"]))} added</title></rect>')
    points = [(left + (len(weeks) + i + 0.5) * slot_w, y(m["stored_bytes"])) for i, m in enumerate(months)]
    out.append('<polyline class="line projection" points="%s"/>' % " ".join(f"{px:.1f},{py:.1f}" for px, py in points))
    for (px, py), m in zip(points, months):
        out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" class="point"><title>month {m["month"]} ({esc(m["at"][:10])}): '
                   f'{esc(human_bytes(m["stored_bytes"]))}</title></circle>')
    last = months[-1]
    out.append(f'<text x="{points[-1][0]:.1f}" y="{points[-1][1] - 8:.1f}" text-anchor="end" class="strong">'
               f'{esc(human_bytes(last["stored_bytes"]))} in {last["month"]} months</text>')
    if quota and quota <= scale_max:
        qy = y(quota)
        out.append(f'<line class="quota" x1="{left}" x2="{left + plot_w}" y1="{qy:.1f}" y2="{qy:.1f}" stroke="#c0392b" stroke-dasharray="6 4">'
                   f'<title>quota {esc(human_bytes(quota))}</title></line>')
    outgrown = f", outgrown by {growth['over_quota_at'][:10]}" if growth.get("over_quota_at") else ""
    label = f"quota {human_bytes(quota)}{outgrown}" if quota else "quota unknown"
    out.append(f'<text x="{left + plot_w}" y="{base + 18}" text-anchor="end" class="tick">{esc(label)}</text>')
    out.append(f'<text x="{left}" y="{base + 18}" class="tick">{esc(weeks[0]["week"]) if weeks else ""}</text>')
    out.append("</svg>")
    return "".join(out)


def page_context(report: dict[str, Any], *, tz: str, can_trigger: dict[str, bool], airflow_base: str,
                 error: str | None = None, user: str | None = None) -> dict[str, Any]:
    """What the template shows, computed from ``collect_status``'s report."""
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
        "chart": storage_chart_svg(report.get("backups", []), now, tz),
        "growth_chart": growth_chart_svg(report.get("growth")),
    }


# ---------------------------------------------------------------------------------------------
# The FastAPI app (api-server only).


def _read_status(settings) -> dict[str, Any]:
    """``collect_status`` over the whole catalog, with Airflow's run history read in this process."""
    from backupctl.cli import remote_config, source_identity
    from pgbackup.report.status import collect_status
    from pgbackup_airflow.timetables import next_run
    from rclone_provider.client import Rclone

    runs = paused = None
    try:
        from pgbackup_airflow import history

        runs, paused = history.last_outcomes(), history.paused()
    except Exception as exc:  # the page still shows the remote's truth
        log.warning("Backups page: Airflow run history not readable: %s", exc)
    remote = Rclone(remote_config(settings.remote_conn_id), logger=log)
    report = collect_status(remote, settings, runs=runs, paused=paused, recent=100_000, identity=source_identity(settings), next_run_of=next_run)
    if runs is not None:
        report["warnings"] += [w for w in [history.missing_pool_warning(settings.pool, settings.pool_slots)] if w]
    return report


def _configured_databases():
    from pgbackup.config.settings import BackupSettings, SettingsError

    try:
        return BackupSettings.from_env().databases
    except SettingsError:
        return ()


def _empty_report(settings) -> dict[str, Any]:
    from pgbackup.model.manifest import utc_iso
    from pgbackup.report.status import next_run, schedules

    now = datetime.now(timezone.utc)
    return {
        "now": utc_iso(now), "remote": "?", "backups": [], "storage": {}, "local": None, "drill": None,
        "warnings": [], "airflow": False,
        "dags": {dag_id: {"schedule": cron, "timezone": settings.timezone,
                          "next_run": utc_iso(next_run(cron, settings.timezone, now)),
                          "last_success": None, "last_failure": None, "paused": None}
                 for dag_id, cron in schedules(settings).items()},
    }


def create_app():
    """The plugin's FastAPI app; every route requires an Airflow user allowed to read ``GATE_DAG``."""
    import jinja2
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from airflow.models.dag import DagModel
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
    from markupsafe import Markup
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from pgbackup.config.settings import BackupSettings, SettingsError

    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                   undefined=jinja2.StrictUndefined)
    app = FastAPI(
        title="pgbackup: Backups page",
        dependencies=[Depends(requires_access_dag("GET", param_dag_id=GATE_DAG))],
        docs_url=None, redoc_url=None, openapi_url=None,
    )

    def airflow_base(request: Request) -> str:
        """The Airflow UI's path prefix as the browser sees it ('' unless [api] base_url has a path)."""
        return request.scope.get("root_path", "").removesuffix(URL_PREFIX)

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, exc: StarletteHTTPException):
        wants_page = request.method == "GET" and "/api/" not in request.url.path and "text/html" in request.headers.get("accept", "")
        if wants_page and (exc.status_code == 401 or exc.detail == "Invalid JWT token"):
            login = get_auth_manager().get_url_login(next_url=f"{airflow_base(request)}/plugin/{UI_ROUTE}")
            return RedirectResponse(login, status_code=303, headers={"Cache-Control": "no-store"})
        if wants_page and exc.status_code == 403:
            body = templates.get_template("refused.html").render(airflow_base=airflow_base(request), gate_dag=GATE_DAG)
            return HTMLResponse(body, status_code=403, headers={"Cache-Control": "no-store"})
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    def may_trigger(user, dag_id: str) -> bool:
        try:
            team = DagModel.get_team_name(dag_id)
            return get_auth_manager().is_authorized_dag(
                method="POST", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id, team_name=team), user=user,
            )
        except Exception as exc:
            log.warning("Backups page: cannot tell whether %s may trigger %s: %s", user, dag_id, exc)
            return False

    def status_or_error(database: str | None) -> tuple[Any, dict[str, Any], str | None]:
        """One database's report (the first when none is asked for); the page shows the others as links."""
        try:
            settings = BackupSettings.from_env()
        except SettingsError as exc:  # the DAGs fail to import with the same line
            return BackupSettings(), _empty_report(BackupSettings()), f"SettingsError: {exc}"
        try:
            settings = settings.for_database(settings.database(database) if database else settings.databases[0])
        except SettingsError as exc:
            return settings, _empty_report(settings), f"SettingsError: {exc}"
        try:
            return settings, _read_status(settings), None
        except Exception as exc:  # a missing connection or an unreachable remote: say so on the page
            log.warning("Backups page: catalog not readable: %s", exc)
            return settings, _empty_report(settings), f"{type(exc).__name__}: {exc}"

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, database: str | None = None, user=Depends(get_user)):
        settings, report, error = status_or_error(database)
        can_trigger = {dag_id: may_trigger(user, dag_id) for dag_id in report["dags"]}
        context = page_context(report, tz=settings.timezone, can_trigger=can_trigger, airflow_base=airflow_base(request),
                               error=error, user=user.get_name())
        context["databases"] = [d.name for d in _configured_databases()]
        context["database"] = settings.databases[0].name
        context["chart"] = Markup(context["chart"])
        context["growth_chart"] = Markup(context["growth_chart"])
        nonce = secrets.token_urlsafe(16)
        body = templates.get_template("backups.html").render(**context, nonce=nonce)
        return HTMLResponse(body, headers={
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": (
                f"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; script-src 'nonce-{nonce}'; "
                "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
            ),
        })

    @app.get("/api/status")
    def status_json(database: str | None = None):
        _, report, error = status_or_error(database)
        return JSONResponse({**report, "error": error}, headers={"Cache-Control": "no-store"})

    return app


class LazyApp:
    """An ASGI app that builds the real one on its first request (only the api-server ever serves it)."""

    def __init__(self, factory) -> None:
        self.factory = factory
        self.app = None

    async def __call__(self, scope, receive, send) -> None:
        if self.app is None:
            self.app = self.factory()
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        return f"LazyApp({self.factory.__module__}.{self.factory.__qualname__})"


class BackupsUIPlugin(AirflowPlugin):
    name = "pgbackup_ui"
    fastapi_apps = [{"app": LazyApp(create_app), "url_prefix": URL_PREFIX, "name": "pgbackup Backups page"}]
    external_views = [{
        "name": "Backups",
        "href": URL_PREFIX.lstrip("/") + "/",  # relative to the UI's <base href>, so it works under a base_url path
        "destination": "nav",
        "url_route": UI_ROUTE,
        "nav_top_level": True,
        "icon": "data:image/svg+xml;utf8," + (
            "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' stroke='%2364748b' stroke-width='2'>"
            "<ellipse cx='12' cy='5' rx='8' ry='3'/><path d='M4 5v14c0 1.7 3.6 3 8 3s8-1.3 8-3V5'/>"
            "<path d='M4 12c0 1.7 3.6 3 8 3s8-1.3 8-3'/></svg>"
        ),
    }]
