"""The **Backups** page in the Airflow UI: catalog, storage chart, schedules and trigger buttons.

An Airflow 3 plugin: a FastAPI app mounted by the api-server at ``/pgbackup``
and an external view that adds "Backups" to the navigation bar; the UI shows
the page in an iframe at ``/plugin/backups``.

Who may see the page and press its buttons is Airflow's own decision: see :mod:`pgbackup_airflow.ui_app`.

The app is built on its first request: every Airflow process loads plugins,
and only the api-server needs FastAPI and the auth machinery.

Four modules: this one is what Airflow discovers (the plugin and its lazy
app); :mod:`pgbackup_airflow.ui_app` the FastAPI app (routes, authorization,
reading the status); :mod:`pgbackup_airflow.ui_view` the view model (pure: the
status report in, what the page shows out); :mod:`pgbackup_airflow.ui_chart`
the SVG charts.
"""

from airflow.plugins_manager import AirflowPlugin

from pgbackup_airflow.ui_app import UI_ROUTE, URL_PREFIX, create_app


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
