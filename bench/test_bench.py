"""The bench's own measuring parts, checked: ``python -m pytest bench/test_bench.py`` (not in ``tests/``:
the suite does not collect it). The benchmark's figures are never asserted — only that the
instruments read what they claim to."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent  # pytest puts this folder on sys.path; the library comes from the venv

from growth import fit_fixed_plus_linear, fit_power_law  # noqa: E402
from pgbackup.postgres.target import PgTarget  # noqa: E402
from run import airflow_settings  # noqa: E402
from server_cpu import ServerCpu, read_title  # noqa: E402

PG_SERVER_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432")


def test_power_law_fit_recovers_the_exponent_and_projects():
    fit = fit_power_law([1e6, 1e7, 1e8], [2 * x ** 0.8 for x in (1e6, 1e7, 1e8)])
    assert fit.b == pytest.approx(0.8)
    assert fit.at(1e11) == pytest.approx(2 * 1e11 ** 0.8)


def test_power_law_fit_of_a_flat_figure_has_exponent_zero():
    assert fit_power_law([10, 100], [5.0, 5.0]).b == pytest.approx(0.0)


def test_power_law_fit_needs_two_distinct_positive_sizes():
    assert fit_power_law([10, 10], [1.0, 2.0]) is None
    assert fit_power_law([10, 100], [0.0, 2.0]) is None  # a zero cannot be on a log-log line: left out, one point remains


def test_power_law_fit_is_least_squares_on_log_log():
    # ln x = 0, L, 2L (L = ln 10); ln y = 0, ln 20, 2L: the slope is 1 (the middle x is the mean),
    # and the line passes through the means, ln a = (ln 20 + 2L) / 3 - L, so a = 2 ** (1/3), not 1.
    fit = fit_power_law([1, 10, 100], [1, 20, 100])
    assert fit.b == pytest.approx(1.0)
    assert fit.a == pytest.approx(2 ** (1 / 3))


@pytest.mark.parametrize(("title", "expected"), [
    ("postgres: 15/main: postgres shop 127.0.0.1(37264) idle", ("backend", "shop")),
    ("postgres: postgres shop [local] COPY", ("backend", "shop")),
    ("postgres: 15/main: parallel worker for PID 4242   ", ("parallel worker", 4242)),
    ("postgres: 15/main: autovacuum worker shop", (None, None)),
    ("postgres: 15/main: checkpointer", (None, None)),
    ("postgres: 15/main: logical replication launcher", (None, None)),
])
def test_process_titles_are_read_as_backend_of_a_database_or_parallel_worker(title, expected):
    assert read_title(title) == expected


def test_server_cpu_counts_the_backend_of_the_watched_database_only():
    """A backend that burns CPU in the watched database is counted; one in another database is not."""
    admin = PgTarget.from_url(f"{PG_SERVER_URL}/postgres")
    names = [f"pgb_benchcpu_{uuid.uuid4().hex[:8]}_{which}" for which in ("watched", "other")]
    conn = admin.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f'CREATE DATABASE "{name}"')
        meter = ServerCpu(admin, [names[0]]).start()
        other = ServerCpu(admin, ["pgb_benchcpu_nobody"]).start()
        for name in names:
            burner = admin.with_database(name).connect()
            try:
                with burner.cursor() as cur:
                    cur.execute("SET max_parallel_workers_per_gather = 0")
                    cur.execute("SELECT count(*) FROM generate_series(1, 3000000) AS g WHERE md5(g::text) > 'f'")
            finally:
                burner.close()
        watched, unwatched = meter.stop(), other.stop()
    finally:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
    assert watched["backends"] == 1
    assert watched["cpu_s"] > 0.2  # 3 million md5s take well over a second of one core
    assert unwatched == {"cpu_s": 0.0, "backends": 0}


def test_fixed_plus_linear_fit_separates_the_fixed_cost():
    fit = fit_fixed_plus_linear([1e8, 2e8, 4e8], [20 + 3e-8 * x for x in (1e8, 2e8, 4e8)])
    assert fit.fixed == pytest.approx(20)
    assert fit.at(1e11) == pytest.approx(20 + 3000)
    assert fit_fixed_plus_linear([5, 5], [1, 2]) is None


def test_airflow_env_takes_airflow_settings_only():
    assert airflow_settings(["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.1", "AIRFLOW__CORE__PARALLELISM=4"]) == {
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.1", "AIRFLOW__CORE__PARALLELISM": "4"}
    for bad in ("BACKUP_POOL=x", "AIRFLOW__SCHEDULER=1", "AIRFLOW__SCHEDULER__IDLE", "airflow__core__x=1"):
        with pytest.raises(ValueError, match="AIRFLOW__SECTION__KEY=VALUE"):
            airflow_settings([bad])
