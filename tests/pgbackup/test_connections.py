"""Every way a connection cannot be used has its own error, a ``ConnectionMissing`` still, worded for the operator."""

import json
from types import SimpleNamespace

import pytest

from pgbackup.config.connections import (
    ConnectionMissing,
    ConnectionNamesNoDatabase,
    ConnectionNotSet,
    ConnectionUnreadable,
    ConnectionWrongType,
    connection_fields,
    pg_target_from_env,
)

SECRET = "s3cret-in-the-variable"


def test_an_unset_variable_is_connection_not_set_and_says_what_to_define():
    with pytest.raises(ConnectionNotSet, match=r"connection 'backup_source' is not set: define AIRFLOW_CONN_BACKUP_SOURCE") as raised:
        connection_fields("backup_source", env={})
    assert isinstance(raised.value, ConnectionMissing)


def test_cut_off_json_is_connection_unreadable_naming_the_variable_and_where_it_broke_without_its_text():
    env = {"AIRFLOW_CONN_BACKUP_REMOTE": '{"conn_type": "rclone", "password": "' + SECRET + '", "extra": {"type": '}
    with pytest.raises(ConnectionUnreadable, match=r"AIRFLOW_CONN_BACKUP_REMOTE is not valid JSON \(line 1, column \d+") as raised:
        connection_fields("backup_remote", env=env)
    assert isinstance(raised.value, ConnectionMissing) and isinstance(raised.value, ValueError)
    assert SECRET not in str(raised.value)


def test_malformed_json_in_the_extra_field_is_connection_unreadable():
    env = {"AIRFLOW_CONN_BACKUP_REMOTE": json.dumps({"conn_type": "rclone", "extra": '{"type": "local", '})}
    with pytest.raises(ConnectionUnreadable, match="the extra field of AIRFLOW_CONN_BACKUP_REMOTE is not valid JSON"):
        connection_fields("backup_remote", env=env)


def test_malformed_json_in_a_uri_s_extra_is_connection_unreadable():
    env = {"AIRFLOW_CONN_BACKUP_REMOTE": "rclone://?__extra__=%7Bnot-json"}
    with pytest.raises(ConnectionUnreadable, match="the __extra__ parameter of AIRFLOW_CONN_BACKUP_REMOTE is not valid JSON"):
        connection_fields("backup_remote", env=env)


def test_a_postgres_uri_without_a_database_is_connection_names_no_database():
    env = {"AIRFLOW_CONN_BACKUP_SOURCE": "postgresql://backup@db.internal:5432"}
    with pytest.raises(ConnectionNamesNoDatabase, match=r"connection 'backup_source' names no database: set its database") as raised:
        pg_target_from_env("backup_source", env=env)
    assert isinstance(raised.value, ConnectionMissing)


def test_a_connection_of_another_type_is_connection_wrong_type():
    from pgbackup_airflow.connections import _target

    http = SimpleNamespace(conn_type="http", host="db", port=5432, login="u", password=None, schema="shop", extra_dejson={})
    with pytest.raises(ConnectionWrongType, match=r"connection 'backup_source' has type 'http'; .* must be a 'postgres' connection") as raised:
        _target(http, "backup_source")
    assert isinstance(raised.value, ConnectionMissing)


def test_a_complete_postgres_uri_gives_its_target():
    target = pg_target_from_env("backup_source", env={"AIRFLOW_CONN_BACKUP_SOURCE": "postgresql://backup@db.internal:6432/shop"})
    assert (target.dbname, target.host, target.port, target.user) == ("shop", "db.internal", 6432, "backup")
