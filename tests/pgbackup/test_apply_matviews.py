"""After a chain's incrementals, the materialized views hold what their queries give on the restored tables.

pg_restore refreshes them after a full; rows applied by incrementals would
otherwise leave them as they were at the full.  A view that is not populated
(``WITH NO DATA``) stays so.
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
    # Reads the first one through a plain view: refreshed after it, or it would copy the stale total.
    "CREATE MATERIALIZED VIEW sale_report AS SELECT sales || ' sales, ' || amount AS line FROM sale_total_view",
    "CREATE MATERIALIZED VIEW sale_later AS SELECT id FROM sale WITH NO DATA",
)
CHANGES = (
    "INSERT INTO sale SELECT g, g FROM generate_series(11, 15) g",
    "DELETE FROM sale WHERE id = 1",
    "REFRESH MATERIALIZED VIEW sale_total",
    "REFRESH MATERIALIZED VIEW sale_report",
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


def test_populated_materialized_views_are_refreshed_after_the_incrementals(make_database, local_remote, tmp_path, scratch_name):
    source = database_with(make_database, *SCHEMA)
    back_up_chain(source, local_remote, tmp_path / "local", CHANGES)
    name = scratch_name()
    result = backupctl(local_remote, "restore", "--to", url_of(name))
    assert result.returncode == 0, result.stderr
    assert views(target_named(name)) == views(source) == {
        "sale_total": [(14, 605)], "sale_report": [("14 sales, 605",)], "sale_later populated": False,
    }
