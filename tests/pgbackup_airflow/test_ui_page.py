"""The Backups page: a real `airflow api-server` with SimpleAuthManager users, a real rclone local remote,
plain HTTP for what unauthenticated callers get, and Chromium (Playwright) for what a signed-in user sees."""

import dataclasses
import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from airflow_api_server import ApiServer, get
from conftest import PROJECT, airflow_cli
from factories import manifest
from pgbackup.model.layout import BackupLayout
from pgbackup.model.manifest import utc_iso
from pgbackup.restore.drill import DrillResult
from pgbackup_airflow.ui_chart import storage_chart_svg, time_ticks

pytestmark = pytest.mark.airflow
NOW = datetime.now(timezone.utc)
LAYOUT = BackupLayout("database")
USERS = {"admin": ("admin", "Adm1n-pw-for-ui-test"), "viewer": ("viewer", "V1ewer-pw-for-ui-test")}
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]
SCREENSHOT = PROJECT / "tests" / "artifacts" / "backups_page.png"


def store(root: Path, m) -> None:
    (root / m.artifact.path).parent.mkdir(parents=True, exist_ok=True)
    (root / m.artifact.path).write_bytes(b"x" * m.artifact.bytes)
    (root / LAYOUT.manifest_path(m.kind, m.id)).write_bytes(m.to_json())


@pytest.fixture(scope="module")
def site(airflow_home, tmp_path_factory):
    """Three committed backups and a passed drill on a local remote, and an api-server reading them."""
    work = tmp_path_factory.mktemp("ui")
    root = work / "remote root" / "Bäckups ü"
    verified = {"method": "remote sha256", "at": utc_iso(NOW)}
    old_full = dataclasses.replace(manifest("full", NOW - timedelta(days=8, hours=2), size=48_000_000), verified=verified)
    full = dataclasses.replace(manifest("full", NOW - timedelta(days=1, hours=2), size=52_000_000), verified=verified)
    inc = manifest("incremental", NOW - timedelta(hours=3), parent=full, size=3_500_000)  # not verified
    for m in (old_full, full, inc):
        store(root, m)
    drill_at = NOW - timedelta(hours=20)
    drill = DrillResult(utc_iso(drill_at), full.id, [full.id], True, 42.5, None, "pgbackup_drill_test")
    (root / LAYOUT.drill_path(drill_at)).parent.mkdir(parents=True, exist_ok=True)
    (root / LAYOUT.drill_path(drill_at)).write_bytes(drill.to_json())

    server = ApiServer(work, USERS, env={
        "AIRFLOW_CONN_BACKUP_REMOTE": json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": str(root)}}),
        "BACKUP_LOCAL_DIR": str(work / "local"),
    })
    # the DAGs must be in the metadata database for Airflow to trigger them: serialize while the server starts
    reserialize = subprocess.Popen([airflow_cli(), "dags", "reserialize"], env=server.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        server.start()
        output, _ = reserialize.communicate(timeout=300)
        assert reserialize.returncode == 0, output.decode(errors="replace")[-3000:]
        yield server, (old_full, full, inc)
    finally:
        if reserialize.poll() is None:
            reserialize.kill()
            reserialize.wait()
        server.stop()


def test_unauthenticated_and_forged_requests_do_not_see_the_catalog(site):
    server, backups = site
    ids = [m.id for m in backups]
    page, data = f"{server.url}/pgbackup/", f"{server.url}/pgbackup/api/status"
    forged = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiIsInJvbGUiOiJhZG1pbiJ9.c2lnbmF0dXJl"

    refused = {
        "browser, no session": get(page, headers={"Accept": "text/html"}),
        "page, no credentials": get(page),
        "data, no credentials": get(data),
        "data, forged bearer": get(data, headers={"Authorization": f"Bearer {forged}"}),
        "data, forged cookie": get(data, headers={"Cookie": f"_token={forged}"}),
        "browser, forged cookie": get(page, headers={"Accept": "text/html", "Cookie": f"_token={forged}"}),
    }
    for case, (status, _headers, body) in refused.items():
        assert status in (303, 401, 403), (case, status, body[:300])
        assert not any(backup_id in body for backup_id in ids), case
        assert "Bäckups" not in body and "remote root" not in body, case
    # a browser is sent to Airflow's own login page, which brings it back to the page in the UI
    for case in ("browser, no session", "browser, forged cookie"):
        status, headers, _ = refused[case]
        assert status == 303 and headers["location"] == "/auth/login?next=%2Fplugin%2Fbackups", case
    assert refused["data, no credentials"][0] == 401

    # the control: the same requests with a real token do see it
    token = server.token("admin", USERS["admin"][1])
    status, _, body = get(data, headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and [b["id"] for b in json.loads(body)["backups"]] == ids[::-1]
    status, _, body = get(page, headers={"Cookie": f"_token={token}", "Accept": "text/html"})
    assert status == 200 and all(backup_id in body for backup_id in ids)


def test_a_viewer_sees_the_catalog_but_cannot_trigger(site):
    server, backups = site
    token = server.token("viewer", USERS["viewer"][1])
    status, headers, body = get(f"{server.url}/pgbackup/", headers={"Authorization": f"Bearer {token}"})
    assert status == 200, body[:500]
    assert all(m.id in body for m in backups)
    assert headers["cache-control"] == "no-store" and "frame-ancestors 'self'" in headers["content-security-policy"]
    assert body.count("disabled title=\"Your Airflow role may not start runs") == 3
    # and Airflow itself refuses the viewer's trigger, whatever the page shows
    status, _ = server.call("POST", "/api/v2/dags/pg_full_backup/dagRuns", token, {"logical_date": None})
    assert status == 403


def test_the_backups_page_in_a_browser(site):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent: install Debian's chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    server, (old_full, full, inc) = site
    admin_token = server.token("admin", USERS["admin"][1])
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    triggered: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1400})
            # Airflow's login page, as a person uses it
            page.goto(f"{server.url}/")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(USERS["admin"][1])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)
            # the navigation entry the plugin adds
            page.get_by_role("link", name="Backups").click()
            page.wait_for_url("**/plugin/backups**", timeout=30_000)
            frame = page.frame_locator("iframe[title=Backups]")
            rows = frame.locator("#catalog tr[data-backup-id]")
            rows.first.wait_for(timeout=60_000)
            assert [rows.nth(i).get_attribute("data-backup-id") for i in range(rows.count())] == [inc.id, full.id, old_full.id]
            assert "restored in 42.5 s" in frame.locator(f"tr[data-backup-id='{full.id}']").inner_text()
            assert "no" in frame.locator(f"tr[data-backup-id='{inc.id}'] td:nth-child(5)").inner_text()
            assert frame.locator("svg.chart rect.bar").count() == 3
            assert frame.locator("#growth svg.growth circle.point").count() == 12  # the 12 months' projection
            dag_rows = frame.locator("#dags tr[data-dag]")
            assert sorted(dag_rows.nth(i).get_attribute("data-dag") for i in range(dag_rows.count())) == [
                "pg_full_backup", "pg_incremental_backup", "pg_restore_drill"]
            next_full = frame.locator("tr[data-dag=pg_full_backup] td:nth-child(3)").inner_text()
            assert next_full.startswith(_next_sunday_2am(NOW).strftime("%Y-%m-%d 02:00")), next_full

            # trigger through Airflow's REST API with the browser's own session (two clicks)
            button = frame.locator("tr[data-dag=pg_full_backup] button[data-trigger]")
            button.click()
            button.click()
            result = frame.locator("#result-pg_full_backup")
            result.get_by_text("Queued").wait_for(timeout=30_000)
            triggered.append(result.locator("a").inner_text())
            page.wait_for_timeout(300)  # let the page settle for the picture
            page.screenshot(path=str(SCREENSHOT))

            status, runs = server.call("GET", "/api/v2/dags/pg_full_backup/dagRuns", admin_token)
            assert status == 200
            (run,) = [r for r in runs["dag_runs"] if r["dag_run_id"] == triggered[0]]
            assert run["run_type"] == "manual" and run["note"] == "Triggered from the Backups page"

            # "Open DAG" moves Airflow's own UI (not a UI nested in the iframe)
            frame.locator("tr[data-dag=pg_full_backup] a", has_text="Open DAG").click()
            page.wait_for_url("**/dags/pg_full_backup", timeout=30_000)
            sync_api.expect(page.locator("iframe[title=Backups]")).to_have_count(0, timeout=30_000)
        finally:
            browser.close()
            for run_id in triggered:  # leave the shared metadata database as it was
                server.call("DELETE", f"/api/v2/dags/pg_full_backup/dagRuns/{run_id}", admin_token)


def _next_sunday_2am(now: datetime) -> datetime:
    candidate = now.replace(hour=2, minute=0, second=0, microsecond=0) + timedelta(days=(6 - now.weekday()) % 7)
    return candidate if candidate > now else candidate + timedelta(days=7)


def test_chart_has_a_bar_per_backup_and_the_running_total():
    rows = [
        {"id": "a", "kind": "full", "finished_at": utc_iso(NOW - timedelta(days=9)), "bytes": 1024 ** 2},
        {"id": "b", "kind": "incremental", "finished_at": utc_iso(NOW - timedelta(days=1)), "bytes": 512 * 1024},
    ]
    svg = storage_chart_svg(rows, NOW, "Europe/Berlin")
    assert svg.count('class="bar ') == 2 and "1.5 MiB</text>" in svg
    assert "No backups yet" in storage_chart_svg([], NOW, "UTC")
    ticks = time_ticks(NOW - timedelta(days=10), NOW, ZoneInfo("Europe/Berlin"))
    assert 3 <= len(ticks) <= 8 and all(t.astimezone(ZoneInfo("Europe/Berlin")).hour == 0 for t, _ in ticks)


def test_growth_chart_has_a_bar_per_week_a_point_per_projected_month_and_the_quota():
    from datetime import timezone as tz

    from factories import manifest
    from pgbackup.policy.retention import RetentionPolicy
    from pgbackup.report.growth import project_storage
    from pgbackup_airflow.ui_chart import growth_chart_svg

    now = datetime(2026, 12, 1, 12, 0, tzinfo=tz.utc)
    backups = [manifest("full", now - timedelta(days=15), size=1000), manifest("full", now - timedelta(days=1), size=1400)]
    growth = project_storage(backups, RetentionPolicy(timedelta(weeks=8), timedelta(days=7)), now, full_interval=timedelta(weeks=1),
                             incremental_interval=timedelta(hours=6), quota_total=200_000).to_dict()
    svg = growth_chart_svg(growth)
    assert svg.count('class="week-bar"') == len(growth["weeks"]) == 3
    assert svg.count('class="point"') == 12 and 'class="quota"' in svg and "quota 195.3 KiB" in svg
    assert "Storage projection: no full backup yet: nothing to project from." in growth_chart_svg(
        project_storage([], RetentionPolicy(timedelta(weeks=8), timedelta(days=7)), now, full_interval=timedelta(weeks=1),
                        incremental_interval=timedelta(hours=6)).to_dict())
