"""``plan_target``: what a restore does to its target, decided from what it found there — at the exact boundaries."""

import pytest

from conftest import admin_connection
from pgbackup.model.identity import SourceIdentity
from pgbackup.restore.chain import (
    RestoreRefused,
    RestoreRequest,
    TargetState,
    create_database_sql,
    plan_target,
)

SOURCE = SourceIdentity("7300000000000000001", 16384, "shop", "LATIN1", "C", "C")
ELSEWHERE = SourceIdentity("7300000000000000002", 16384, "shop", "LATIN1", "C", "C")
DESCRIBE = "postgres@127.0.0.1:5432/shop"


def state(**kwargs) -> TargetState:
    return TargetState(**{"database": "shop", "server_version_num": 150000, "exists": False, "superuser": True,
                          "can_set_replication_role": True, "free_connections": 10, **kwargs})


def test_jobs_may_use_every_free_connection_but_the_one_pg_restore_keeps():
    assert plan_target(state(), RestoreRequest(jobs=9), DESCRIBE).create
    with pytest.raises(RestoreRefused, match="--jobs 10: the target server can accept only 9 more"):
        plan_target(state(), RestoreRequest(jobs=10), DESCRIBE)
    with pytest.raises(RestoreRefused, match="--jobs 0: give 1 or more"):
        plan_target(state(), RestoreRequest(jobs=0), DESCRIBE)


def test_the_check_gets_the_connections_pg_restore_leaves_up_to_its_jobs():
    assert plan_target(state(), RestoreRequest(jobs=4), DESCRIBE).check_connections == 4  # 9 usable: 4 for pg_restore, 4 of 5 left
    assert plan_target(state(), RestoreRequest(jobs=5), DESCRIBE).check_connections == 4
    assert plan_target(state(), RestoreRequest(jobs=9), DESCRIBE).check_connections == 0  # none left: the check follows post-data


def test_a_missing_target_is_created_like_the_source_and_a_superuser_keeps_owners():
    plan = plan_target(state(), RestoreRequest(source=SOURCE), DESCRIBE)
    assert (plan.drop, plan.create, plan.create_like, plan.no_owner, plan.safety_dump) == (False, True, SOURCE, False, False)


def test_the_same_database_of_another_cluster_is_not_the_source():
    plan = plan_target(state(exists=True, tables=3, identity=ELSEWHERE), RestoreRequest(clean=True, source=SOURCE), DESCRIBE)
    assert plan.drop and plan.create and not plan.safety_dump


def test_the_source_itself_is_replaced_only_when_named_and_then_dumped_first():
    found = state(exists=True, tables=3, identity=SOURCE)
    with pytest.raises(RestoreRefused, match="is the backup's source"):
        plan_target(found, RestoreRequest(clean=True, source=SOURCE), DESCRIBE)
    plan = plan_target(found, RestoreRequest(clean=True, source=SOURCE, replace_source="shop"), DESCRIBE)
    assert plan.drop and plan.safety_dump


def test_a_role_that_is_not_superuser_needs_ownership_to_drop_and_createdb_to_create():
    owner = dict(superuser=False, exists=True, tables=1, owner="app", identity=ELSEWHERE)
    with pytest.raises(RestoreRefused, match="which this role does not own"):
        plan_target(state(**owner, owns_database=False, createdb=True), RestoreRequest(clean=True), DESCRIBE)
    with pytest.raises(RestoreRefused, match="neither CREATEDB nor superuser"):
        plan_target(state(**owner, owns_database=True, createdb=False), RestoreRequest(clean=True), DESCRIBE)
    plan = plan_target(state(**{**owner, "tables": 0}, owns_database=True), RestoreRequest(), DESCRIBE)
    assert (plan.create, plan.no_owner) == (False, True)


def test_incrementals_need_a_role_allowed_to_set_session_replication_role():
    with pytest.raises(RestoreRefused, match="session_replication_role"):
        plan_target(state(can_set_replication_role=False), RestoreRequest(incrementals=1), DESCRIBE)
    assert plan_target(state(can_set_replication_role=False), RestoreRequest(incrementals=0), DESCRIBE).create


def test_an_existing_target_of_another_locale_is_refused_unless_allowed_or_recreated():
    utf8 = state(exists=True, identity=SourceIdentity("7300000000000000002", 1, "shop", "UTF8", "C.UTF-8", "C.UTF-8"))
    with pytest.raises(RestoreRefused, match="encoding UTF8 where the backup has LATIN1, LC_COLLATE C.UTF-8 where the backup has C"):
        plan_target(utf8, RestoreRequest(source=SOURCE), DESCRIBE)
    assert not plan_target(utf8, RestoreRequest(source=SOURCE, allow_encoding_change=True), DESCRIBE).create
    assert plan_target(utf8, RestoreRequest(source=SOURCE, clean=True), DESCRIBE).create_like == SOURCE


def test_create_database_names_the_locale_provider_from_postgresql_15():
    icu = SourceIdentity(None, 1, "shop", "UTF8", "en_US.UTF-8", "en_US.UTF-8", "i", "de-DE")
    conn = admin_connection()
    try:
        assert create_database_sql("shop", icu, 150004).as_string(conn) == (
            "CREATE DATABASE \"shop\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'en_US.UTF-8' LC_CTYPE 'en_US.UTF-8' "
            "LOCALE_PROVIDER icu ICU_LOCALE 'de-DE'"
        )
        assert create_database_sql("shop", icu, 140010).as_string(conn).endswith("LC_CTYPE 'en_US.UTF-8'")
        assert create_database_sql("shop", None, 150004).as_string(conn) == 'CREATE DATABASE "shop"'
    finally:
        conn.close()
