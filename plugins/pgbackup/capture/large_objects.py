"""Large objects the backup role may not read: found before pg_dump starts, not after it has run for hours."""

from __future__ import annotations

from pgbackup.capture.dump import DumpError


class LargeObjectsUnreadable(DumpError):
    """The backup role may not read some large objects: pg_dump would fail after a long time; fail before it starts."""


# Large objects the current role may not read, as PostgreSQL 15 decides it (pg_largeobject_aclmask):
# superusers and lo_compat_privileges read all, owners (and roles inheriting from them) theirs, else a SELECT grant.
LARGE_OBJECTS_UNREADABLE_SQL = """
SELECT count(*), min(m.oid::bigint) FROM pg_catalog.pg_largeobject_metadata m
WHERE pg_catalog.current_setting('is_superuser') <> 'on' AND pg_catalog.current_setting('lo_compat_privileges') <> 'on'
  AND NOT pg_catalog.pg_has_role(m.lomowner, 'USAGE')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.aclexplode(m.lomacl) a
                  WHERE a.privilege_type = 'SELECT' AND (a.grantee = 0 OR pg_catalog.pg_has_role(a.grantee, 'USAGE')))
"""


def check_large_objects_readable(cur, source: str) -> None:
    """Raise :class:`LargeObjectsUnreadable` unless the role can read every large object and their pages (for the fingerprint).

    ``pg_read_all_data`` covers tables, not large objects (PostgreSQL 15): such a role
    dumps a database with large objects only once it may read them.
    """
    cur.execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata)")
    if not cur.fetchone()[0]:
        return
    cur.execute(LARGE_OBJECTS_UNREADABLE_SQL)
    unreadable, example = cur.fetchone()
    cur.execute("SELECT pg_catalog.has_table_privilege('pg_catalog.pg_largeobject', 'SELECT'), current_user")
    pages_readable, role = cur.fetchone()
    if unreadable:
        raise LargeObjectsUnreadable(
            f"role {role} cannot read {unreadable} large object(s) of {source} (e.g. {example}), so pg_dump would fail; nothing was "
            f"captured: make the backup role a superuser, or the owner of the large objects, or GRANT SELECT ON LARGE OBJECT <oid> "
            f"TO {role} for each, or set lo_compat_privileges = on"
        )
    if not pages_readable:
        raise LargeObjectsUnreadable(
            f"role {role} cannot read pg_catalog.pg_largeobject of {source}, which the large objects' fingerprint reads; nothing was "
            f"captured: GRANT pg_read_all_data TO {role} (or SELECT on pg_catalog.pg_largeobject)"
        )
