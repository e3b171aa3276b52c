"""Turn Airflow connections into the library's targets, with one clear line when they are wrong."""

from __future__ import annotations

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from pgbackup.config.connections import (
    ConnectionMissing,
    ConnectionNotSet,
    check_postgres_type,
    connection_fields,
    pg_target_from_fields,
)
from pgbackup.model.identity import SourceIdentity
from pgbackup.postgres.sources import reachable_source_identity
from pgbackup.postgres.target import PgTarget
from rclone_provider.client import RemoteConfig


def source_target(conn_id: str) -> PgTarget:
    """The database a connection of type ``postgres`` points at."""
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ConnectionNotSet(
            f"connection {conn_id!r} is not defined: set AIRFLOW_CONN_{conn_id.upper()} or add it in Admin > Connections"
        ) from None
    return _target(conn, conn_id)


def source_identity(conn_id: str):
    """The identity of the source database, or None when its connection is not defined or it cannot be reached.

    A check that must work with the source down (staleness: "no backup since …")
    then chooses backups without it; the catalog refuses to guess when that is ambiguous.
    """
    try:
        return reachable_source_identity(source_target(conn_id))
    except ConnectionMissing:
        return None


def drill_server(drill_conn_id: str, source_conn_id: str) -> PgTarget:
    """The server restore drills use: ``drill_conn_id`` when defined, else the source's own server."""
    try:
        return _target(BaseHook.get_connection(drill_conn_id), drill_conn_id)
    except AirflowNotFoundException:
        return source_target(source_conn_id)


def _target(conn, conn_id: str) -> PgTarget:
    check_postgres_type(conn.conn_type, conn_id)
    fields = {
        "host": conn.host, "port": conn.port, "login": conn.login, "password": conn.password,
        "schema": conn.schema, "extra": conn.extra_dejson,
    }
    return pg_target_from_fields(fields, conn_id)


def server_connection_fields(conn_id: str) -> dict:
    """A connection's fields outside a task (the api-server's Backups page): ``AIRFLOW_CONN_<ID>``, else Airflow's
    connection store and secrets backends."""
    try:
        return connection_fields(conn_id)
    except ConnectionMissing as missing:
        from airflow.models.connection import Connection

        try:
            conn = Connection.get_connection_from_secrets(conn_id)
        except Exception:
            raise missing from None
        return {"conn_type": conn.conn_type, "host": conn.host, "port": conn.port, "login": conn.login,
                "password": conn.password, "schema": conn.schema, "extra": conn.extra_dejson}


def server_remote_config(conn_id: str) -> RemoteConfig:
    """The rclone remote of ``conn_id``, looked up as :func:`server_connection_fields` does."""
    return RemoteConfig.from_extra(conn_id, server_connection_fields(conn_id).get("extra") or {})


def server_source_identity(conn_id: str) -> SourceIdentity | None:
    """The source database's identity for the Backups page, or None when its connection is not defined or it is unreachable."""
    try:
        return reachable_source_identity(pg_target_from_fields(server_connection_fields(conn_id), conn_id))
    except ConnectionMissing:
        return None
