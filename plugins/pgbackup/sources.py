"""Which source is this installation's?  Its identity read from the source database, or chosen by the operator.

The catalog keeps one source's backups (:meth:`pgbackup.catalog.Catalog.for_source`);
this module says which: the identity the configured source connection reports
now, or — when the source cannot be reached, as in a disaster — the
``--source-id SYSID/OID`` the operator gives, or none (then a prefix holding
several sources' backups is refused rather than guessed).
"""

from __future__ import annotations

import logging
import re

import psycopg2

from pgbackup.catalog import Catalog
from pgbackup.identity import SourceIdentity, read_source_identity
from pgbackup.postgres import PgTarget, SourceError

log = logging.getLogger(__name__)
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
