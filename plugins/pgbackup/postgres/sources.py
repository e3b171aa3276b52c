"""Which source is this installation's?  Its identity read from the source database, or chosen by the operator.

The catalog keeps one source's backups (:meth:`pgbackup.model.catalog.Catalog.for_source`);
this module says which: the identity the configured source connection reports
now, or — when the source cannot be reached, as in a disaster — the
``--source-id SYSID/OID`` the operator gives, or none (then a prefix holding
several sources' backups is refused rather than guessed).
"""

from __future__ import annotations

import logging
import re

import psycopg2

from pgbackup.model.catalog import Catalog
from pgbackup.model.identity import SourceIdentity
from pgbackup.postgres.target import PgTarget, SourceError

log = logging.getLogger(__name__)
SOURCE_IDENTITY_SQL = """
SELECT d.oid::bigint, d.datname, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
       CASE WHEN current_setting('server_version_num')::int >= 150000 THEN
         (SELECT to_jsonb(x)->>'datlocprovider' FROM pg_database x WHERE x.oid = d.oid) ELSE 'c' END,
       CASE WHEN current_setting('server_version_num')::int >= 150000 THEN
         (SELECT coalesce(to_jsonb(x)->>'daticulocale', to_jsonb(x)->>'datlocale') FROM pg_database x WHERE x.oid = d.oid) END
FROM pg_database d WHERE d.datname = current_database()
"""


def read_source_identity(cur) -> SourceIdentity:
    """The identity of the database ``cur`` is connected to.  Safe inside a transaction (a failed probe is rolled back to a savepoint)."""
    cur.execute(SOURCE_IDENTITY_SQL)
    oid, name, encoding, collate, ctype, provider, icu = cur.fetchone()
    cur.execute("SAVEPOINT pgbackup_identity")
    try:
        cur.execute("SELECT system_identifier::text FROM pg_control_system()")
        system_identifier = cur.fetchone()[0]
        cur.execute("RELEASE SAVEPOINT pgbackup_identity")
    except Exception:  # psycopg2.Error: permission denied for the function
        cur.execute("ROLLBACK TO SAVEPOINT pgbackup_identity")
        system_identifier = None
    return SourceIdentity(system_identifier, int(oid), name, encoding, collate, ctype, provider or "c", icu)


_SOURCE_ID_RE = re.compile(r"^(\d+|\?)/\d+$")


def source_identity_of(target: PgTarget) -> SourceIdentity:
    """The identity of the database ``target`` names; a connection failure is raised (``SourceError``)."""
    conn = target.connect()
    try:
        with conn.cursor() as cur:
            identity = read_source_identity(cur)
        conn.rollback()
        return identity
    finally:
        conn.close()


def reachable_source_identity(target: PgTarget) -> SourceIdentity | None:
    """The identity of the database ``target`` names, or None when it cannot be reached (logged, not raised)."""
    try:
        return source_identity_of(target)
    except (SourceError, psycopg2.Error) as exc:
        log.info("Source not reachable (%s): backups are chosen without its identity", str(exc).strip())
        return None


def check_source_id(text: str) -> str:
    """``--source-id``'s value, as ``sysid/oid`` (the form the catalog lists sources in)."""
    if not _SOURCE_ID_RE.match(text.strip()):
        raise ValueError(f"--source-id {text!r}: use SYSTEM_IDENTIFIER/DATABASE_OID as listed, e.g. 7312345678901234567/16384")
    return text.strip()


def own_backups(catalog: Catalog, identity: SourceIdentity | None, source_id: str | None = None) -> Catalog:
    """``catalog`` narrowed to this installation's source: ``source_id`` when the operator chose, else ``identity``."""
    if source_id:
        return catalog.for_source_id(check_source_id(source_id))
    return catalog.for_source(identity)
