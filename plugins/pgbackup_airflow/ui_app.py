"""The **Backups** page's app: routes, authorization and the status it reads (the plugin itself: :mod:`pgbackup_airflow.ui_plugin`).

Mounted by the api-server at ``/pgbackup``; the UI shows the page in an iframe at ``/plugin/backups``.

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
"""

import logging
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pgbackup.config.dag_ids import FULL_BACKUP

# No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations (``Request``, imported
# inside create_app) at runtime, and a postponed one it cannot resolve becomes a required query parameter.
log = logging.getLogger(__name__)

URL_PREFIX = "/pgbackup"
UI_ROUTE = "backups"
GATE_DAG = FULL_BACKUP  # who may read this DAG may read the backup catalog
TEMPLATES = Path(__file__).with_name("templates")


def read_status(settings) -> dict[str, Any]:
    """``collect_status`` over the whole catalog, with Airflow's run history read in this process."""
    from pgbackup.report.status import collect_status
    from pgbackup_airflow.connections import server_remote_config, server_source_identity
    from pgbackup_airflow.timetables import next_run
    from rclone_provider.client import Rclone

    runs = paused = None
    try:
        from pgbackup_airflow import history

        runs, paused = history.last_outcomes(), history.paused()
    except Exception as exc:  # the page still shows the remote's truth
        log.warning("Backups page: Airflow run history not readable: %s", exc)
    remote = Rclone(server_remote_config(settings.remote_conn_id), logger=log)
    report = collect_status(remote, settings, runs=runs, paused=paused, recent=100_000,
                            identity=server_source_identity(settings.source_conn_id), next_run_of=next_run)
    if runs is not None:
        report["warnings"] += [w for w in [history.missing_pool_warning(settings.pool, settings.pool_slots)] if w]
    return report


def _configured_databases():
    from pgbackup.config.settings import BackupSettings, SettingsError

    try:
        return BackupSettings.from_env().databases
    except SettingsError:
        return ()


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
    from pgbackup_airflow.ui_chart import growth_chart_svg, storage_chart_svg
    from pgbackup_airflow.ui_view import empty_report, page_context, parse_iso

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
            return BackupSettings(), empty_report(BackupSettings()), f"SettingsError: {exc}"
        try:
            settings = settings.for_database(settings.database(database) if database else settings.databases[0])
        except SettingsError as exc:
            return settings, empty_report(settings), f"SettingsError: {exc}"
        try:
            return settings, read_status(settings), None
        except Exception as exc:  # a missing connection or an unreachable remote: say so on the page
            log.warning("Backups page: catalog not readable: %s", exc)
            return settings, empty_report(settings), f"{type(exc).__name__}: {exc}"

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, database: str | None = None, user=Depends(get_user)):
        settings, report, error = status_or_error(database)
        can_trigger = {dag_id: may_trigger(user, dag_id) for dag_id in report["dags"]}
        context = page_context(report, tz=settings.timezone, can_trigger=can_trigger, airflow_base=airflow_base(request),
                               error=error, user=user.get_name())
        context["databases"] = [d.name for d in _configured_databases()]
        context["database"] = settings.databases[0].name
        now = parse_iso(report.get("now")) or datetime.now(timezone.utc)
        context["chart"] = Markup(storage_chart_svg(report.get("backups", []), now, settings.timezone))
        context["growth_chart"] = Markup(growth_chart_svg(report.get("growth")))
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
