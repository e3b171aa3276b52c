"""Materialized views across incrementals hold what the source's hold: stale ones stay stale, refreshed ones come from a full.

PostgreSQL can put a materialized view back only by REFRESH.  pg_restore does so
after the full; an incremental never refreshes one (the capture takes a full
when a view was refreshed since its parent), so a view the source left stale
while its tables changed is restored as the source holds it — not recomputed.
"""

import pytest

from restore_helpers import back_up_chain, database_with, query, restore_newest, scratch_names

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
    return {"sale_total": query(target, "SELECT sales, amount FROM sale_total"), "sale_report": query(target, "SELECT line FROM sale_report"),
            "sale_later populated": query(target, "SELECT relispopulated FROM pg_class WHERE relname = 'sale_later'")[0][0]}


def test_materialized_views_left_stale_across_an_incremental_restore_as_the_source_holds_them(
    make_database, local_remote, tmp_path, scratch_name
):
    source = database_with(make_database, *SCHEMA)
    back_up_chain(source, local_remote, tmp_path / "local", CHANGES)
    assert views(restore_newest(local_remote, scratch_name)) == views(source) == {
        "sale_total": [(10, 550)], "sale_report": [("10 sales, 550",)], "sale_later populated": False,
    }
