"""Read Airflow-style connections from ``AIRFLOW_CONN_*`` variables without Airflow.

Disaster recovery runs where Airflow may be gone, so ``backupctl restore`` reads
the very same variables Airflow does, in either form Airflow accepts: a JSON
object (``{"conn_type": "rclone", "extra": {...}}``) or a URI
(``postgresql://user:pass@host:5432/db``, ``rclone://?type=local&root=/srv``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pgbackup.postgres.target import PgTarget
from rclone_provider.client import RemoteConfig

POSTGRES_TYPES = ("postgres", "postgresql")


class ConnectionMissing(LookupError):
    """A connection this process needs cannot be used; each cause is a subclass, so callers may catch them all as one."""


class ConnectionNotSet(ConnectionMissing):
    """The connection is not defined where this process can see it (no ``AIRFLOW_CONN_*`` variable, not in Airflow)."""


class ConnectionUnreadable(ConnectionMissing, ValueError):
    """The connection is defined but cannot be parsed: its JSON, or the JSON of its ``extra``, is malformed."""


class ConnectionWrongType(ConnectionMissing):
    """The connection is of another type than the one asked for (say, an HTTP connection given as the backup source)."""


class ConnectionNamesNoDatabase(ConnectionMissing):
    """A PostgreSQL connection without a database name: the backup would not know which database to read."""


def env_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def connection_fields(conn_id: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The connection as Airflow's JSON fields (conn_type, host, login, password, schema, port, extra)."""
    env = os.environ if env is None else env
    raw = env.get(env_var(conn_id), "").strip()
    if not raw:
        raise ConnectionNotSet(
            f"connection {conn_id!r} is not set: define {env_var(conn_id)} (see .env.example) or create it in Airflow"
        )
    if raw.startswith("{"):
        data = _json(raw, f"{env_var(conn_id)}")
        extra = data.get("extra") or {}
        if isinstance(extra, str):
            extra = _json(extra, f"the extra field of {env_var(conn_id)}")
        return {**data, "extra": extra}
    parts = urlsplit(raw)
    query = dict(parse_qsl(parts.query))
    extra = _json(query.pop("__extra__"), f"the __extra__ parameter of {env_var(conn_id)}") if "__extra__" in query else query
    return {
        "conn_type": parts.scheme.replace("-", "_"),
        "host": unquote(parts.hostname or ""),
        "login": unquote(parts.username or ""),
        "password": unquote(parts.password) if parts.password else None,
        "schema": unquote(parts.path.lstrip("/")),
        "port": parts.port,
        "extra": extra,
    }


def _json(text: str, what: str) -> Any:
    """``text`` parsed, or :class:`ConnectionUnreadable` naming ``what`` and where parsing stopped (never the text: it may hold a password)."""
    try:
        return json.loads(text)
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno}: {exc.msg})" if isinstance(exc, json.JSONDecodeError) else ""
        raise ConnectionUnreadable(f"{what} is not valid JSON{where}: fix the variable, or write it as a URI") from None


def check_postgres_type(conn_type: str | None, conn_id: str) -> None:
    """:class:`ConnectionWrongType` unless ``conn_type`` is PostgreSQL's."""
    if conn_type not in POSTGRES_TYPES:
        raise ConnectionWrongType(
            f"connection {conn_id!r} has type {conn_type!r}; a backup source or restore target must be a 'postgres' connection: "
            "recreate it with type postgres"
        )


def pg_target_from_fields(fields: Mapping[str, Any], conn_id: str) -> PgTarget:
    if not fields.get("schema"):
        raise ConnectionNamesNoDatabase(
            f"connection {conn_id!r} names no database: set its database (schema) field, e.g. postgresql://user@host:5432/shop"
        )
    extra = fields.get("extra") or {}
    return PgTarget(
        dbname=fields["schema"],
        host=fields.get("host") or "127.0.0.1",
        port=int(fields.get("port") or 5432),
        user=fields.get("login") or "postgres",
        password=fields.get("password"),
        options={k: str(v) for k, v in extra.items() if k in ("sslmode", "sslrootcert", "sslcert", "sslkey", "options")},
    )


def pg_target_from_env(conn_id: str, env: Mapping[str, str] | None = None) -> PgTarget:
    return pg_target_from_fields(connection_fields(conn_id, env), conn_id)


def remote_from_env(conn_id: str, env: Mapping[str, str] | None = None) -> RemoteConfig:
    fields = connection_fields(conn_id, env)
    return RemoteConfig.from_extra(conn_id, fields.get("extra") or {})
