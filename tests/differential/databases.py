"""Throwaway databases on the test server (``TEST_PG_URL``), named ``pgb_fuzz_*`` so strays are easy to spot."""

from __future__ import annotations

import os
import uuid

import psycopg2
from psycopg2 import sql

from pgbackup.postgres.target import PgTarget

PG_SERVER_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432")


def _admin(statement: sql.Composable) -> None:
    conn = psycopg2.connect(f"{PG_SERVER_URL}/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def create_database(role: str, encoding: str = "UTF8") -> PgTarget:
    """A new empty database; a non-UTF8 one comes from template0 with the C locale, which every encoding accepts."""
    name = f"pgb_fuzz_{role}_{uuid.uuid4().hex[:10]}"
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if encoding != "UTF8":
        statement += sql.SQL(" TEMPLATE template0 ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C'").format(sql.Literal(encoding))
    _admin(statement)
    return PgTarget.from_url(f"{PG_SERVER_URL}/{name}")


def unused_database(role: str) -> PgTarget:
    """A database name nobody uses yet: a restore creates it itself, with the backup's encoding and locale."""
    return PgTarget.from_url(f"{PG_SERVER_URL}/pgb_fuzz_{role}_{uuid.uuid4().hex[:10]}")


def drop_database(target: PgTarget) -> None:
    _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target.dbname)))
