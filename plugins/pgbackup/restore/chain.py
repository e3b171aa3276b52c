"""Restore a database to a backup point: the base full with pg_restore, then each incremental in order.

Every object is downloaded and its sha256 checked against its manifest before
the target is touched; at the end the target's per-table fingerprints and its
sequences must equal those recorded at the backup point, or the restore fails.
Needs only this library, rclone and the PostgreSQL client tools — no Airflow.

Nothing is dropped, created or dumped before every check has passed: the target
is read once (``TargetState``) and a pure ``plan_target`` decides what happens to
it or refuses — too many ``--jobs``, a non-empty target without ``--clean``, the
backups' own source database, a right the role lacks, an encoding or locale other
than the source's.  A missing target is created like the source (encoding,
collation, ctype, locale provider) from template0.

A chain of one full is restored section by section (``ArchiveRestore``) and its
check (``RestoreCheck``) reads the tables on spare connections while pg_restore
builds the indexes and constraints; a chain with incrementals is checked once
the last one is applied.  Either way the check is ``RestoreCheck``'s.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import psycopg2
from psycopg2 import sql

from pgbackup.capture.compression import CHUNK, decompressed_chunks
from pgbackup.config.connections import ConnectionMissing, pg_target_from_env
from pgbackup.model.catalog import BrokenChainError, Catalog
from pgbackup.model.identity import SourceIdentity
from pgbackup.model.layout import BackupLayout
from pgbackup.model.manifest import BackupManifest
from pgbackup.postgres.fingerprint import user_tables
from pgbackup.postgres.naming import Identifier
from pgbackup.postgres.sources import read_source_identity
from pgbackup.postgres.target import PgTarget, PgTools, SourceError, tools_for_server
from pgbackup.restore.apply import (
    IncrementalApplyError,
    apply_incremental,
)
from pgbackup.restore.check import RestoreCheck, restore_sequences
from pgbackup.restore.check import check_restored as check_restored  # where callers have imported it from
from pgbackup.restore.lease import Lease
from rclone_provider.child_process import ChildProcess, ChildRegistry
from rclone_provider.client import RcloneError

log = logging.getLogger(__name__)


class RestoreError(RuntimeError):
    """The restore cannot start or did not give the backed-up state; the message says which backup or table."""


class ObjectUnavailable(RestoreError):
    """An object could not be read whole from this remote; nothing was applied, another copy may serve."""


def choose_chain(catalog: Catalog, *, backup_id: str | None = None, at: datetime | None = None) -> list[BackupManifest]:
    """The backups to apply, base full first: to ``backup_id``, to the newest at or before ``at``, or to the newest."""
    if backup_id and at:
        raise RestoreError("give either a backup id or a time, not both")
    if backup_id:
        point = catalog.get(backup_id)
    elif at:
        point = catalog.latest_at(at)
    elif catalog.backups:
        point = catalog.backups[-1]
    else:
        raise RestoreError("the remote holds no backups")
    try:
        return catalog.chain(point.id)
    except BrokenChainError as exc:
        raise RestoreError(str(exc)) from None


@dataclass
class RestoreReport:
    backup_id: str
    chain: list[str]
    seconds: float
    tables: int
    rows: int
    steps: dict[str, float] = field(default_factory=dict)
    safety_dump: Path | None = None  # the dump of a replaced source database (--replace-source)


def fetch_verified(store, manifest: BackupManifest, dest: Path, logger: logging.Logger) -> Path:
    """Download one backup's object and check its size and sha256 against the manifest."""
    digest, size = hashlib.sha256(), 0
    try:
        with store.open_read(manifest.artifact.path) as stream, open(dest, "wb") as out:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
    except (RcloneError, FileNotFoundError) as exc:
        raise ObjectUnavailable(f"backup {manifest.id}: cannot read {manifest.artifact.path} from the remote ({exc})") from None
    if size != manifest.artifact.bytes or digest.hexdigest() != manifest.artifact.sha256:
        raise ObjectUnavailable(
            f"backup {manifest.id}: {manifest.artifact.path} is corrupt ({size} bytes, sha256 {digest.hexdigest()[:16]}…; "
            f"the manifest says {manifest.artifact.bytes} bytes, sha256 {manifest.artifact.sha256[:16]}…)"
        )
    logger.info("Downloaded and verified %s (%s bytes)", manifest.artifact.path, size)
    return dest


class RestoreRefused(RestoreError):
    """The restore was refused before the target was changed in any way; the message says why and what to give."""


@dataclass(frozen=True)
class TargetState:
    """What the restore found on the target server before changing anything."""

    database: str
    server_version_num: int
    exists: bool
    tables: int = 0
    identity: SourceIdentity | None = None  # of the existing target database
    owner: str | None = None
    owns_database: bool = False  # the restoring role is (a member of) its owner
    superuser: bool = False
    createdb: bool = False
    can_set_replication_role: bool = False
    free_connections: int = 0  # client connections the server can still accept

    @classmethod
    def read(cls, target: PgTarget) -> TargetState:
        with _reading(target.with_database("postgres")) as cur:
            cur.execute(TARGET_SERVER_SQL)
            version_num, superuser, createdb, free = cur.fetchone()
            can_set = superuser
            if not superuser and version_num >= 150000:
                cur.execute("SELECT has_parameter_privilege('session_replication_role', 'SET')")
                can_set = cur.fetchone()[0]
            cur.execute("SELECT pg_get_userbyid(datdba), pg_has_role(datdba, 'MEMBER') FROM pg_database WHERE datname = %s",
                        (target.dbname,))
            row = cur.fetchone()
        state = cls(target.dbname, version_num, row is not None, superuser=superuser, createdb=createdb,
                    can_set_replication_role=can_set, free_connections=free)
        if row is None:
            return state
        with _reading(target) as cur:
            tables = len(user_tables(cur))
            identity = read_source_identity(cur)
        return replace(state, tables=tables, identity=identity, owner=row[0], owns_database=row[1])


@contextmanager
def _reading(target: PgTarget):
    """A cursor on ``target`` for the checks before the restore; a target that cannot be reached is a ``RestoreError``."""
    try:
        conn = target.connect(application_name="pgbackup restore check")
    except SourceError as exc:
        raise RestoreError(f"restore target: {exc}") from None
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


TARGET_SERVER_SQL = """
SELECT current_setting('server_version_num')::int, r.rolsuper, r.rolcreatedb,
       current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
       - coalesce(current_setting('reserved_connections', true)::int, 0)
       - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int
FROM pg_roles r WHERE r.rolname = current_user
"""


@dataclass(frozen=True)
class RestoreRequest:
    """What the operator asked for, and what the backups say about their source."""

    jobs: int = 1
    clean: bool = False
    incrementals: int = 0
    source: SourceIdentity | None = None  # the backup's details["source"]; None for version-1 manifests
    protected: tuple[tuple[str, SourceIdentity], ...] = ()  # configured source databases: (name, identity)
    replace_source: str | None = None
    allow_encoding_change: bool = False


@dataclass(frozen=True)
class TargetPlan:
    """What the restore will do to its target, decided before it does any of it."""

    drop: bool
    create: bool
    create_like: SourceIdentity | None  # the encoding and locale to create it with; None: the server's defaults
    safety_dump: bool
    no_owner: bool  # pg_restore --no-owner: a role that is not a superuser cannot give objects to others
    check_connections: int = 0  # connections left beside pg_restore's for the check to run during post-data


def plan_target(state: TargetState, request: RestoreRequest, describe: str) -> TargetPlan:
    """Decide what happens to the target, or refuse — every check before anything is dropped or created."""
    if request.jobs < 1:
        raise RestoreRefused(f"--jobs {request.jobs}: give 1 or more parallel jobs")
    usable = state.free_connections - 1  # pg_restore's own connection beside its jobs
    if request.jobs > usable:
        raise RestoreRefused(
            f"--jobs {request.jobs}: the target server can accept only {max(usable, 0)} more job connections now "
            f"(max_connections, less the reserved connections and the sessions already open); "
            f"give --jobs {max(usable, 1)} or fewer"
        )
    if state.exists and state.tables and not request.clean:
        raise RestoreRefused(f"target database {describe} is not empty ({state.tables} tables); give --clean to replace its contents")
    source_name = _protected_name(state, request)
    if request.replace_source is not None and request.replace_source != state.database:
        raise RestoreRefused(f"--replace-source {request.replace_source!r} does not name the target database {state.database!r}; nothing was changed")
    if source_name and request.replace_source != state.database:
        raise RestoreRefused(
            f"target database {describe} is {source_name} itself; restoring would destroy it. "
            f"If that is what you want, give --replace-source {state.database} (a safety dump of it is taken first)"
        )
    drop = state.exists and request.clean
    create = not state.exists or drop
    if drop and not (state.superuser or state.owns_database):
        raise RestoreRefused(f"--clean must drop {describe}, owned by {state.owner}, which this role does not own. Nothing was changed")
    if create and not (state.superuser or state.createdb):
        reason = "--clean drops and recreates it" if drop else "it does not exist"
        raise RestoreRefused(
            f"{describe} must be created ({reason}) but the role has neither CREATEDB nor superuser; "
            f"restore into an empty database it owns instead. Nothing was changed"
        )
    if request.incrementals and not state.can_set_replication_role:
        raise RestoreRefused(
            f"the chain has {request.incrementals} incremental(s), whose apply needs session_replication_role: restore as a superuser "
            f"or GRANT SET ON PARAMETER session_replication_role to the role. Nothing was changed"
        )
    if state.exists and not drop and request.source and state.identity and not request.allow_encoding_change:
        differs = _locale_differences(state.identity, request.source)
        if differs:
            raise RestoreRefused(
                f"target database {describe} has {differs}; create it alike, give --clean to recreate it so, "
                f"or --allow-encoding-change to convert. Nothing was changed"
            )
    return TargetPlan(drop=drop, create=create, create_like=request.source if create else None,
                      safety_dump=bool(source_name) or request.replace_source == state.database and state.exists,
                      no_owner=not state.superuser, check_connections=max(0, min(request.jobs, usable - request.jobs)))


def _protected_name(state: TargetState, request: RestoreRequest) -> str | None:
    """How the refusal names the target when it is a database the backups come from, else None."""
    if not state.exists or state.identity is None:
        return None
    if request.source and state.identity.same_database(request.source):
        return f"the backup's source, {request.source.describe()}"
    for name, identity in request.protected:
        if state.identity.same_database(identity):
            return f"the configured source database {name!r}, {identity.describe()}"
    return None


def _locale_differences(have: SourceIdentity, want: SourceIdentity) -> str:
    fields = [("encoding", have.encoding, want.encoding), ("LC_COLLATE", have.collate, want.collate),
              ("LC_CTYPE", have.ctype, want.ctype), ("locale provider", have.locale_provider, want.locale_provider)]
    if want.locale_provider != "c":
        fields.append(("locale", have.icu_locale, want.icu_locale))
    return ", ".join(f"{label} {a} where the backup has {b}" for label, a, b in fields if a != b)


def create_database_sql(name: str, like: SourceIdentity | None, server_version_num: int) -> sql.Composable:
    """``CREATE DATABASE`` with the source's encoding and locale, from template0 (the only template that allows choosing them)."""
    statement = sql.SQL("CREATE DATABASE {}").format(Identifier(name))
    if like is None:
        return statement
    parts = [sql.SQL("TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
        sql.Literal(like.encoding), sql.Literal(like.collate), sql.Literal(like.ctype))]
    if server_version_num >= 150000:
        provider = {"c": "libc", "i": "icu", "b": "builtin"}.get(like.locale_provider, "libc")
        parts.append(sql.SQL("LOCALE_PROVIDER {}").format(sql.SQL(provider)))
        if provider == "icu" and like.icu_locale:
            parts.append(sql.SQL("ICU_LOCALE {}").format(sql.Literal(like.icu_locale)))
        elif provider == "builtin" and like.icu_locale:
            parts.append(sql.SQL("BUILTIN_LOCALE {}").format(sql.Literal(like.icu_locale)))
    return sql.SQL(" ").join([statement, *parts])


def configured_source_identities(sources: list[tuple[str, str]], logger: logging.Logger | None = None) -> tuple[tuple[str, SourceIdentity], ...]:
    """``(name, identity)`` of each configured source database ``(name, connection id)`` reachable from here.

    On a recovery machine the sources' connections are often not defined (or the
    source is what was lost): those are skipped, the backup's own recorded source
    still protects its database.
    """
    logger = logger or log
    found = []
    for name, conn_id in sources:
        try:
            conn = pg_target_from_env(conn_id).connect(application_name="pgbackup restore check")
        except ConnectionMissing:
            continue
        except SourceError as exc:
            logger.warning("Cannot read the identity of configured source %s (%s); it is not protected by name", name, exc)
            continue
        try:
            with conn.cursor() as cur:
                found.append((name, read_source_identity(cur)))
        finally:
            conn.close()
    return tuple(found)


def source_identity(manifest: BackupManifest) -> SourceIdentity | None:
    """The source recorded in a (format 2) manifest; None for older ones."""
    recorded = manifest.details.get("source")
    return SourceIdentity.from_dict(recorded) if recorded else None


class ChainRestore:
    """Restores a chain into one target database; ``terminate()`` stops pg_restore."""

    def __init__(self, store, layout: BackupLayout, *, pg_bin_dir: str | None = None, logger: logging.Logger | None = None) -> None:
        self.store = store
        self.layout = layout
        self.pg_bin_dir = pg_bin_dir
        self.log = logger or log
        self.children = ChildRegistry()
        self.check: RestoreCheck | None = None

    def terminate(self) -> None:
        self.children.terminate_all()
        if self.check is not None:
            self.check.cancel()
        terminate = getattr(self.store, "terminate", None)
        if terminate:
            terminate()

    def prepare_target(self, target: PgTarget, chain: list[BackupManifest], request: RestoreRequest, *,
                       safety_dir: Path | None = None) -> tuple[PgTools, TargetPlan, Path | None]:
        """Check the target can take this backup and that every right is there; then (only then) drop, dump, create."""
        full = chain[0]
        state = TargetState.read(target)
        backup_major = int(full.server_version.split(".")[0])
        if state.server_version_num // 10000 < backup_major:
            version = f"{state.server_version_num // 10000}.{state.server_version_num % 10000}"
            raise RestoreRefused(
                f"the target server runs PostgreSQL {version}, older than the backup's {full.server_version}; "
                f"restore into PostgreSQL {backup_major} or newer"
            )
        plan = plan_target(state, request, target.describe())
        tools = tools_for_server(max(state.server_version_num, backup_major * 10000), self.pg_bin_dir)
        safety = None
        if plan.safety_dump:
            if safety_dir is None:
                raise RestoreRefused(f"replacing {target.describe()} needs a directory for its safety dump; nothing was changed")
            safety = self._safety_dump(target, tools, Path(safety_dir))
        maintenance = target.with_database("postgres")
        if plan.drop:
            self.log.warning("Dropping and recreating target database %s (--clean)", target.describe())
            self._admin(maintenance, sql.SQL("DROP DATABASE {}").format(Identifier(target.dbname)))
        if plan.create:
            self._admin(maintenance, create_database_sql(target.dbname, plan.create_like, state.server_version_num))
        return tools, plan, safety

    def _safety_dump(self, target: PgTarget, tools: PgTools, safety_dir: Path) -> Path:
        """``pg_dump -Fc`` of what the target holds now, so that replacing a source by mistake can be undone."""
        safety_dir.mkdir(parents=True, exist_ok=True)
        path = safety_dir / f"{target.dbname}-before-restore-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}.dump"
        argv = [tools.pg_dump, "--no-password", "--format=custom", f"--file={path}", f"--dbname={target.conninfo()}"]
        self.log.warning("Taking a safety dump of %s into %s before replacing it", target.describe(), path)
        child = run_to_exit(self.children, argv, target, self.log)
        if child.returncode != 0:
            path.unlink(missing_ok=True)
            raise RestoreRefused(f"the safety dump of {target.describe()} failed ({last_error_line(child)}); nothing was changed")
        self.log.warning("Safety dump of %s: %s (undo with: pg_restore --clean --create --dbname=postgres %s)", target.describe(), path, path)
        return path

    @staticmethod
    def _admin(maintenance: PgTarget, statement: sql.Composable) -> None:
        conn = maintenance.connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        except psycopg2.Error as exc:
            raise RestoreError(f"on the target server: {str(exc).strip().splitlines()[0]}") from None
        finally:
            conn.close()

    def run(self, chain: list[BackupManifest], target: PgTarget, *, jobs: int = 1, clean: bool = False, work_dir: str | None = None,
            allow_encoding_change: bool = False, replace_source: str | None = None,
            protected: tuple[tuple[str, SourceIdentity], ...] = (), safety_dir: Path | None = None) -> RestoreReport:
        """Restore ``chain`` into ``target``.

        ``protected`` names the configured source databases (beside the backup's own
        source) that are never replaced unless ``replace_source`` names the target;
        ``safety_dir`` is where the dump of a replaced source goes.
        """
        started = time.monotonic()
        point = chain[-1]
        steps: dict[str, float] = {}
        source = source_identity(chain[0])
        request = RestoreRequest(jobs=jobs, clean=clean, incrementals=len(chain) - 1, source=source, protected=tuple(protected),
                                 replace_source=replace_source, allow_encoding_change=allow_encoding_change)
        self.log.info("Restoring %s into %s: %s", point.id, target.describe(), " -> ".join(m.id for m in chain))
        tools, plan, safety = self.prepare_target(target, chain, request, safety_dir=safety_dir)
        client_encoding = (point.details.get("settings") or {}).get("client_encoding") or (source.encoding if source else None)
        with Lease(self.store, self.layout, [m.id for m in chain], purpose="restore"), \
                tempfile.TemporaryDirectory(prefix="pgbackup-restore-", dir=work_dir) as tmp:
            clock = time.monotonic()
            files = [fetch_verified(self.store, m, Path(tmp, f"{m.id}{Path(m.artifact.path).suffix}"), self.log) for m in chain]
            steps["download and verify"] = time.monotonic() - clock
            clock = time.monotonic()
            # A full alone has its tables checked beside pg_restore's post-data; incrementals change them first.
            alone = len(chain) == 1
            self.check = RestoreCheck(target, point, jobs=(plan.check_connections or jobs) if alone else jobs)
            ArchiveRestore(tools, logger=self.log, children=self.children).run(
                files[0], target, expected_uncompressed=chain[0].uncompressed_bytes, jobs=jobs, work_dir=tmp, no_owner=plan.no_owner,
                after_data=self.check.check_tables if alone else None, beside_post_data=plan.check_connections > 0,
            )
            steps[f"pg_restore {chain[0].id}"] = time.monotonic() - clock
            try:
                for manifest, path in zip(chain[1:], files[1:]):
                    clock = time.monotonic()
                    apply_incremental(path, manifest, target, self.log, client_encoding=client_encoding)
                    steps[f"apply {manifest.id}"] = time.monotonic() - clock
            except IncrementalApplyError as exc:
                raise RestoreError(str(exc)) from None
        clock = time.monotonic()
        if not alone:
            self.check.check_tables()
        restore_sequences(target, point)
        tables, rows = self.check.finish()
        steps["check fingerprints"] = time.monotonic() - clock  # with a full alone: only what could not overlap pg_restore
        report = RestoreReport(point.id, [m.id for m in chain], time.monotonic() - started, tables, rows, steps, safety_dump=safety)
        self.log.info("Restored %s: %s tables, %s rows, fingerprints match, %.1fs", point.id, tables, rows, report.seconds)
        return report


class ArchiveRestore:
    """Decompress a full backup's ``.dump.zst`` to a temporary file and ``pg_restore`` it.

    A file, not a pipe, because parallel pg_restore (``jobs`` > 1) needs to seek.
    ``no_owner`` is for a restoring role that is not a superuser: it cannot give
    objects to their original owners (``ALTER ... OWNER TO`` would fail), so it keeps
    them, as the owner of the database it restores into.  Privileges are still
    restored: an owner may grant on its own objects, and dropping the GRANTs would
    silently open or close access the source had.

    With ``after_data`` the archive is restored one section at a time (pre-data,
    data, then post-data: what one pg_restore does, in its order) and ``after_data`` runs
    once the data is in — in a thread beside post-data when ``beside_post_data``
    (the check reads tables, it needs none of their indexes), else after it.
    """

    def __init__(self, tools: PgTools, *, logger: logging.Logger | None = None, children: ChildRegistry | None = None) -> None:
        self.tools = tools
        self.log = logger or log
        self.children = children or ChildRegistry()

    def terminate(self) -> None:
        self.children.terminate_all()

    def run(self, archive: str | Path, target: PgTarget, *, expected_uncompressed: int | None = None, jobs: int = 1,
            work_dir: str | None = None, no_owner: bool = False, after_data: Callable[[], None] | None = None,
            beside_post_data: bool = True) -> None:
        with tempfile.NamedTemporaryFile(prefix="pgbackup-", suffix=".dump", dir=work_dir) as plain, open(archive, "rb") as compressed:
            for chunk in decompressed_chunks(compressed, expected_bytes=expected_uncompressed, source=str(archive)):
                plain.write(chunk)
            plain.flush()
            self.log.info("pg_restore %s of %s into %s (%s jobs%s)", self.tools.version, archive, target.describe(), jobs,
                          ", --no-owner" if no_owner else "")
            restore = functools.partial(self._pg_restore, plain.name, target, jobs=jobs, no_owner=no_owner)
            if after_data is None:
                restore()
                return
            restore("pre-data", "data")
            if not beside_post_data:
                restore("post-data")
                after_data()
                return
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-check") as pool:
                checked = pool.submit(after_data)
                restore("post-data")  # on failure the pool still waits for the check before raising
            checked.result()

    def _pg_restore(self, path: str, target: PgTarget, *sections: str, jobs: int, no_owner: bool) -> None:
        # --dbname takes a connection string: the name goes in quoted, so "shop=restored" stays a name.
        argv = [self.tools.pg_restore, "--no-password", "--exit-on-error", f"--jobs={jobs}", f"--dbname={target.conninfo()}",
                *(["--no-owner"] if no_owner else []), *(f"--section={section}" for section in sections), path]
        child = run_to_exit(self.children, argv, target, self.log)
        if child.returncode != 0:
            part = f" ({', '.join(sections)})" if sections else ""
            raise RestoreError(f"pg_restore into {target.describe()} failed{part}: {last_error_line(child)}")


def run_to_exit(children: ChildRegistry, argv: list[str], target: PgTarget, logger: logging.Logger) -> ChildProcess:
    """Run a client tool against ``target`` (its password in the environment, never in ``argv``) under ``children``, to its exit."""
    with target.libpq_env() as env:
        child = children.start(argv, env=env, log=logger, stdout=None)
        try:
            with child:
                child.wait()
        finally:
            children.forget(child)
    return child


def last_error_line(child: ChildProcess) -> str:
    """The tool's last line of error output, for a message that says in its words what failed."""
    return (child.stderr_tail.splitlines()[-1:] or [f"exit code {child.returncode}"])[0]
