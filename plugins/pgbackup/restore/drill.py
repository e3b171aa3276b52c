"""The restore drill: prove the newest backup point restores, and measure how long it takes (the real RTO).

It restores into a scratch database on a server of the operator's choosing,
lets the restore's own fingerprint check compare every table with the
manifest, drops the scratch database whatever happened, and records the result
on the remote (``<prefix>/drills/``) where ``backupctl status`` reads it.

A drill that is killed (its worker lost, the task stopped with SIGKILL) cannot
drop its scratch database, so each drill first sweeps those left behind.  Only a
proven orphan goes: a running drill holds a session-level advisory lock named
after its scratch database, on the server's maintenance database, from before it
creates the database until after it drops it — PostgreSQL releases that lock when
the drill's connection ends, however the drill ended.  A scratch database whose
lock is free and which no session is connected to (a plain ``DROP DATABASE``, which
refuses one in use) is an orphan; the sweeper holds the lock while it drops it.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

import psycopg2
from psycopg2 import sql

from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from pgbackup.model.manifest import utc_iso
from pgbackup.postgres.naming import Identifier
from pgbackup.postgres.target import PgTarget
from pgbackup.restore.chain import ChainRestore, RestoreError, choose_chain
from pgbackup.storage.store import stored_at

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "pgbackup_drill_"
SCRATCH_NAME_PATTERN = "^pgbackup_drill_[0-9]{14}_[0-9a-f]{8}$"  # what run() names them, and nothing else
# The key of a scratch database's advisory lock, from its name (on the maintenance database, where every drill locks).
_SCRATCH_LOCK_KEY = "pg_catalog.hashtextextended(%s, 0)"
# How long an object without a manifest may be the first backup still on its way to its commit (BACKUP_ORPHAN_GRACE's default).
IN_FLIGHT_GRACE = timedelta(days=1)


class NothingToDrill(LookupError):
    """No backup has ever been committed here, so there is nothing to restore yet (a first deploy; see :func:`catalog_never_used`).

    Not a failed drill: nothing is recorded.  A catalog that had backups and lost
    them is not empty (its problems and orphans remain) and fails as a drill.
    """


@dataclass(frozen=True)
class DrillResult:
    at: str
    backup_id: str | None  # the point restored; when the drill failed before choosing one, the id it was asked for (or None)
    chain: list[str]
    ok: bool
    seconds: float
    error: str | None
    scratch_database: str
    requested: str | None = None  # the backup_id the drill was asked for; None: the newest

    @property
    def point_text(self) -> str:
        """What was drilled, for one line of text: never a bare ``None``."""
        return drill_point_text(asdict(self))

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2) + "\n").encode()


class RestoreDrill:
    def __init__(self, store, layout: BackupLayout, server: PgTarget, *, pg_bin_dir: str | None = None, logger: logging.Logger | None = None,
                 source=None, in_flight: timedelta = IN_FLIGHT_GRACE) -> None:
        self.store = store
        self.in_flight = in_flight  # see catalog_never_used
        self.source = source  # the SourceIdentity whose backups are drilled; None: the one source stored here
        self.layout = layout
        self.server = server
        self.log = logger or log
        self.restore = ChainRestore(store, layout, pg_bin_dir=pg_bin_dir, logger=self.log)

    def terminate(self) -> None:
        self.restore.terminate()

    def run(self, *, backup_id: str | None = None, jobs: int = 1) -> DrillResult:
        now = datetime.now(timezone.utc)
        # Unique, not only per second: the drills of several databases run at once on one scratch server
        # (mapped task instances), and one must never drop the other's scratch database.
        scratch = self.server.with_database(f"{SCRATCH_PREFIX}{now:%Y%m%d%H%M%S}_{secrets.token_hex(4)}")
        started = time.monotonic()
        chain: list[str] = []
        point = None
        error = None
        loaded = Catalog.load(self.store, self.layout)
        # A first deploy has nothing to drill; a backup asked for by id that is not there is a failed drill.
        if catalog_never_used(loaded, now=now, in_flight=self.in_flight) and not backup_id:
            raise NothingToDrill(f"no backup has been taken under {self.layout.prefix}/ yet: nothing to drill (first deploy)"
                                 + first_backup_in_flight(loaded))
        with self._holding_scratch(scratch.dbname):
            self.sweep_orphaned_scratch()
            try:
                manifests = choose_chain(loaded.for_source(self.source), backup_id=backup_id)
                chain = [m.id for m in manifests]
                point = manifests[-1].id
                self.log.info("Drill: restoring %s into scratch database %s", point, scratch.describe())
                self.restore.run(manifests, scratch, jobs=jobs)
            except (RestoreError, LookupError) as exc:  # a backup not found, or several sources and none chosen
                error = str(exc)
                self.log.error("Drill failed: %s", error)
            finally:
                self._drop(scratch)
        result = DrillResult(utc_iso(now), point or backup_id, chain, error is None, round(time.monotonic() - started, 1), error, scratch.dbname,
                             requested=backup_id)
        self.store.put_bytes(result.to_json(), self.layout.drill_path(now))
        self.log.info("Drill %s in %.1fs (recorded at %s)", "passed" if result.ok else "FAILED", result.seconds, self.layout.drill_path(now))
        return result

    def _maintenance(self):
        conn = self.server.with_database("postgres").connect(application_name="pgbackup drill")
        conn.autocommit = True
        return conn

    @contextmanager
    def _holding_scratch(self, name: str):
        """This drill's claim on its scratch database: the advisory lock a sweep must get before it drops one."""
        conn = self._maintenance()
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT pg_catalog.pg_advisory_lock({_SCRATCH_LOCK_KEY})", (name,))
            yield
        finally:
            conn.close()  # releases the lock

    def sweep_orphaned_scratch(self) -> list[str]:
        """Drop the scratch databases of drills that ended without dropping their own; returns their names."""
        swept = []
        conn = self._maintenance()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT d.datname FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.~) %s"
                    " AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.datid = d.oid) ORDER BY 1",
                    (SCRATCH_NAME_PATTERN,),
                )
                for (name,) in cur.fetchall():
                    cur.execute(f"SELECT pg_catalog.pg_try_advisory_lock({_SCRATCH_LOCK_KEY})", (name,))
                    if not cur.fetchone()[0]:
                        continue  # its drill is running
                    try:
                        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(Identifier(name)))  # not FORCE: never one in use
                        swept.append(name)
                        self.log.warning("Dropped scratch database %s, left behind by a drill that did not finish", name)
                    except psycopg2.Error as exc:
                        self.log.warning("Left scratch database %s in place: %s", name, str(exc).strip().splitlines()[0])
                    finally:
                        cur.execute(f"SELECT pg_catalog.pg_advisory_unlock({_SCRATCH_LOCK_KEY})", (name,))
        finally:
            conn.close()
        return swept

    def _drop(self, scratch: PgTarget) -> None:
        conn = self._maintenance()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(Identifier(scratch.dbname)))
        except psycopg2.Error as exc:
            self.log.error("Could not drop scratch database %s: %s", scratch.dbname, exc)
        finally:
            conn.close()


def catalog_never_used(catalog: Catalog, *, now: datetime | None = None, in_flight: timedelta = IN_FLIGHT_GRACE) -> bool:
    """True when no backup was ever committed under the prefix: no manifest, readable or not, and no object but
    what the first backup may still be writing — objects without a manifest, each written less than ``in_flight`` ago.

    The first-deploy state the drill and the staleness check skip.  A backup's object reaches the remote
    before its manifest (upload, verify, then commit): looked at in between, the first backup of a first
    deploy is an orphan, and counting it as "something was stored" made a healthy first deploy alert.
    Once a manifest was written, or an object has waited longer than ``in_flight`` for one (the first
    backup failed after its upload, which alerted itself; retention's orphan grace is the same wait), an
    empty list of backups means they were lost or never landed, and that alerts.  An object whose write
    time is unknown is never taken for one in flight.
    """
    if catalog.backups or catalog.problems:
        return False
    now = now or datetime.now(timezone.utc)
    return all(_written_within(orphan.mod_time, now, in_flight) for orphan in catalog.orphans)


def first_backup_in_flight(catalog: Catalog) -> str:
    """`` (the first backup's N object(s) are stored, its manifest not yet)`` for the skip messages, or ``""``."""
    count = len(catalog.orphans)
    return f" (the first backup's {count} object(s) are stored, its manifest not yet)" if count else ""


def _written_within(mod_time: str, now: datetime, age: timedelta) -> bool:
    moment = stored_at(mod_time)
    return moment is not None and now - moment <= age


def drill_point_text(drill: dict) -> str:
    """The backup a recorded drill restored, or why there is none: ``20261129T020000Z-full``, ``no backup chosen (the newest was asked for)``."""
    if drill.get("backup_id"):
        return drill["backup_id"]
    requested = drill.get("requested")
    return f"backup {requested} (not found)" if requested else "no backup point chosen (the newest was asked for)"


def latest_drill(store, layout: BackupLayout) -> dict | None:
    """The newest recorded drill result, or None."""
    records = sorted(o.path for o in store.list(layout.drills_folder()) if o.path.endswith("-drill.json"))
    if not records:
        return None
    return json.loads(store.read_bytes(records[-1]))
