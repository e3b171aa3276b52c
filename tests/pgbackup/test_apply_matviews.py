"""Materialized views across incrementals hold what the source's hold: stale ones stay stale, refreshed ones come from a full.

PostgreSQL can put a materialized view back only by REFRESH.  pg_restore does so
after the full; an incremental never refreshes one (the capture takes a full
when a view was refreshed since its parent), so a view the source left stale
while its tables changed is restored as the source holds it — not recomputed.
"""

import pytest
from test_restore_cli import (
    back_up_chain,
    backupctl,
    database_with,
    scratch_names,
    target_named,
    url_of,
)

scratch_name = pytest.fixture(scratch_names, name="scratch_name")

SCHEMA = (
    "CREATE TABLE sale (id integer PRIMARY KEY, amount integer NOT NULL)",
    "INSERT INTO sale SELECT g, g * 10 FROM generate_series(1, 10) g",
    "CREATE MATERIALIZED VIEW sale_total AS SELECT count(*) AS sales, sum(amount) AS amount FROM sale",
    "CREATE VIEW sale_total_view AS SELECT sales, amount FROM sale_total",
    "CREATE MATERIALIZED VIEW sale_report AS SELECT sales || ' sales, ' || amount AS line FROM sale_total_view",
    "CREATE MATERIALIZED VIEW sale_later AS SELECT id FROM sale WITH NO DATA",
)
# Rows change, the views are not refreshed: on the source they stay as they were at the full.
CHANGES = (
    "INSERT INTO sale SELECT g, g FROM generate_series(11, 15) g",
    "DELETE FROM sale WHERE id = 1",
)


def views(target) -> dict:
    conn = target.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT sales, amount FROM sale_total")
        total = cur.fetchall()
        cur.execute("SELECT line FROM sale_report")
        report = cur.fetchall()
        cur.execute("SELECT relispopulated FROM pg_class WHERE relname = 'sale_later'")
        later = cur.fetchone()[0]
    conn.close()
    return {"sale_total": total, "sale_report": report, "sale_later populated": later}


def test_materialized_views_left_stale_across_an_incremental_restore_as_the_source_holds_them(
    make_database, local_remote, tmp_path, scratch_name
):
    source = database_with(make_database, *SCHEMA)
    back_up_chain(source, local_remote, tmp_path / "local", CHANGES)
    name = scratch_name()
    result = backupctl(local_remote, "restore", "--to", url_of(name))
    assert result.returncode == 0, result.stderr
    assert views(target_named(name)) == views(source) == {
        "sale_total": [(10, 550)], "sale_report": [("10 sales, 550",)], "sale_later populated": False,
    }
