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


class ConnectionMissing(LookupError):
    """The connection is not defined where this process can see it."""


def env_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def connection_fields(conn_id: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The connection as Airflow's JSON fields (conn_type, host, login, password, schema, port, extra)."""
    env = os.environ if env is None else env
    raw = env.get(env_var(conn_id), "").strip()
    if not raw:
        raise ConnectionMissing(
            f"connection {conn_id!r} is not set: define {env_var(conn_id)} (see .env.example) or create it in Airflow"
        )
    if raw.startswith("{"):
        try:
            data = json.loads(raw)
        except ValueError:
            raise ConnectionMissing(f"{env_var(conn_id)} is not valid JSON") from None
        extra = data.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra)
        return {**data, "extra": extra}
    parts = urlsplit(raw)
    query = dict(parse_qsl(parts.query))
    extra = json.loads(query.pop("__extra__")) if "__extra__" in query else query
    return {
        "conn_type": parts.scheme.replace("-", "_"),
        "host": unquote(parts.hostname or ""),
        "login": unquote(parts.username or ""),
        "password": unquote(parts.password) if parts.password else None,
        "schema": unquote(parts.path.lstrip("/")),
        "port": parts.port,
        "extra": extra,
    }


def pg_target_from_fields(fields: Mapping[str, Any], conn_id: str) -> PgTarget:
    if not fields.get("schema"):
        raise ConnectionMissing(f"connection {conn_id!r} names no database (the connection's schema/database field)")
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
