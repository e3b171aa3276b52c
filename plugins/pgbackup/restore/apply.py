"""Apply an incremental backup's sections to a restored database, as pg_restore would have written them.

One incremental is one transaction: its deletes, upserts and whole-table
replacements arrive in an order foreign keys would refuse, but the end state is
one consistent snapshot.  Nothing the application built on top of its tables
may run meanwhile:

- ``session_replication_role = replica`` holds off foreign-key checks and the
  triggers of the default mode (``ENABLE``), as pg_restore's ``--disable-triggers`` does;
- it does *not* hold off triggers set ``ENABLE ALWAYS`` or ``ENABLE REPLICA`` (the
  latter fire precisely because the session is a replica), so those user
  triggers of every table the incremental touches are disabled inside the
  transaction and put back, each in its own mode, before it commits.  A failed
  apply rolls back the data and the trigger changes alike.

The rows are sent in the source database's encoding (``client_encoding`` is
pinned to it), so a target with a different client default — ``PGCLIENTENCODING``
in the operator's shell — still reads them as they were written.

Materialized views are never refreshed here: a capture that sees a view refreshed
since its parent takes a full instead, so across an incremental a view holds what
it held at the full — which is what pg_restore gave it.  Refreshing would compute
it from the newer rows and differ from a source whose view was left stale.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg2
from psycopg2 import sql

from pgbackup.capture.compression import CorruptArchiveError, DecompressedStream
from pgbackup.capture.delta import DeltaFormatError, DeltaReader
from pgbackup.model.manifest import BackupManifest
from pgbackup.postgres.fingerprint import pin_output_settings
from pgbackup.postgres.naming import Identifier
from pgbackup.postgres.target import PgTarget

log = logging.getLogger(__name__)


class IncrementalApplyError(RuntimeError):
    """An incremental could not be applied; nothing of it was kept.  The message names the backup."""


# User triggers that session_replication_role = replica leaves firing: 'A' (ENABLE ALWAYS) and 'R' (ENABLE REPLICA).
FIRING_TRIGGERS_SQL = """
SELECT t.tgname, t.tgenabled FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND NOT t.tgisinternal AND t.tgenabled IN ('A', 'R')
ORDER BY t.tgname
"""
_ENABLE_IN_MODE = {"A": sql.SQL("ENABLE ALWAYS TRIGGER"), "R": sql.SQL("ENABLE REPLICA TRIGGER")}


class HeldTriggers:
    """The ENABLE ALWAYS / ENABLE REPLICA triggers disabled in this transaction, and the mode each goes back to."""

    def __init__(self, cur) -> None:
        self.cur = cur
        self.seen: set[tuple[str, str]] = set()
        self.held: list[tuple[sql.Identifier, str, str]] = []  # (table, trigger, mode)

    def hold(self, schema: str, name: str) -> None:
        if (schema, name) in self.seen:
            return
        self.seen.add((schema, name))
        self.cur.execute(FIRING_TRIGGERS_SQL, (schema, name))
        table = Identifier(schema, name)
        for trigger, mode in self.cur.fetchall():
            self.cur.execute(sql.SQL("ALTER TABLE ONLY {} DISABLE TRIGGER {}").format(table, Identifier(trigger)))
            self.held.append((table, trigger, mode))

    def put_back(self) -> None:
        for table, trigger, mode in self.held:
            self.cur.execute(sql.SQL("ALTER TABLE ONLY {} {} {}").format(table, _ENABLE_IN_MODE[mode], Identifier(trigger)))


def apply_incremental(path: Path, manifest: BackupManifest, target: PgTarget, logger: logging.Logger | None = None,
                      *, client_encoding: str | None = None) -> dict[str, int]:
    """Apply one incremental's sections in one transaction; returns the counts of deleted, upserted and replaced rows."""
    logger = logger or log
    conn = target.connect(application_name="pgbackup restore")
    counts = {"deleted": 0, "upserted": 0, "replaced": 0, "triggers held": 0}
    try:
        if client_encoding:
            conn.set_client_encoding(client_encoding)
        with conn.cursor() as cur, open(path, "rb") as compressed:
            try:
                cur.execute("SET LOCAL session_replication_role = replica")
            except psycopg2.Error as exc:
                raise IncrementalApplyError(
                    f"applying incrementals needs a role allowed to set session_replication_role (a superuser, or "
                    f"GRANT SET ON PARAMETER session_replication_role on PostgreSQL 15+): {str(exc).strip().splitlines()[0]}"
                ) from None
            pin_output_settings(cur, client_encoding=client_encoding)
            triggers = HeldTriggers(cur)
            stream = DecompressedStream(compressed, expected_bytes=manifest.uncompressed_bytes, source=str(path))
            reader = DeltaReader(stream, source=manifest.artifact.path)
            for header, data in reader.sections():
                triggers.hold(header["schema"], header["name"])
                apply_section(cur, header, data, counts)
            triggers.put_back()
            counts["triggers held"] = len(triggers.held)
        conn.commit()
    except (psycopg2.Error, CorruptArchiveError, DeltaFormatError) as exc:
        conn.rollback()
        raise IncrementalApplyError(f"applying incremental {manifest.id} failed: {str(exc).strip().splitlines()[0]}") from None
    finally:
        conn.close()
    logger.info("Applied %s: %s rows deleted, %s upserted, %s whole-table rows (%s ALWAYS/REPLICA triggers held off)",
                manifest.id, counts["deleted"], counts["upserted"], counts["replaced"], counts["triggers held"])
    return counts


def _column_clause(columns: list[str]) -> sql.Composable:
    """`` (a, b)`` for COPY, or nothing for a table without columns: ``COPY t () FROM STDIN`` is a syntax error."""
    if not columns:
        return sql.SQL("")
    return sql.SQL(" ({})").format(sql.SQL(", ").join(map(Identifier, columns)))


def apply_section(cur, header: dict, data, counts: dict[str, int]) -> None:
    table = Identifier(header["schema"], header["name"])
    columns = sql.SQL(", ").join(map(Identifier, header["columns"]))
    column_clause = _column_clause(header["columns"])
    keys = [Identifier(k) for k in header["key_columns"]]
    action = header["action"]
    if action == "delete":
        cur.execute("CREATE TEMP TABLE pgb_deleted_keys (k text) ON COMMIT DROP")
        cur.copy_expert("COPY pgb_deleted_keys FROM STDIN", data)
        key_text = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.SQL("t.") + k for k in keys))
        cur.execute(sql.SQL("DELETE FROM ONLY {} AS t WHERE {} IN (SELECT k FROM pgb_deleted_keys)").format(table, key_text))
        counts["deleted"] += cur.rowcount
        cur.execute("DROP TABLE pgb_deleted_keys")
    elif action == "upsert":
        # The sections carry no generated columns (they are computed on insert), but a primary key may be one:
        # the staging table computes them the way the target does, so rows are matched on the whole key.
        cur.execute(sql.SQL("CREATE TEMP TABLE pgb_rows (LIKE {} INCLUDING GENERATED) ON COMMIT DROP").format(table))
        cur.copy_expert(sql.SQL("COPY pgb_rows{} FROM STDIN").format(column_clause).as_string(cur), data)
        match = sql.SQL(" AND ").join(sql.SQL("t.{k} = u.{k}").format(k=k) for k in keys)
        cur.execute(sql.SQL("DELETE FROM ONLY {} AS t USING pgb_rows AS u WHERE {}").format(table, match))
        cur.execute(sql.SQL("INSERT INTO {}{} OVERRIDING SYSTEM VALUE SELECT {} FROM pgb_rows").format(table, column_clause, columns))
        counts["upserted"] += cur.rowcount
        cur.execute("DROP TABLE pgb_rows")
    elif action == "replace":
        cur.execute(sql.SQL("DELETE FROM ONLY {}").format(table))
        cur.copy_expert(sql.SQL("COPY {}{} FROM STDIN").format(table, column_clause).as_string(cur), data)
        counts["replaced"] += cur.rowcount
    else:
        raise IncrementalApplyError(f"unknown section action {action!r} for {header.get('table')}")
