"""Every setting of the backup system, read from ``BACKUP_*`` environment variables.

Environment variables, not Airflow Variables, because restore and status must
work on a machine where Airflow is gone; the same variables configure both.
``.env.example`` and the README list them all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pendulum

from pgbackup.capture.compression import Compression
from pgbackup.policy.retention import RetentionPolicy

PROJECT_DIR = Path(__file__).resolve().parents[3]
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# A database name is a remote folder, a local folder, a CLI argument and a Jinja literal: keep it plain.
_DATABASE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


# The remote connection this project uses unless BACKUP_REMOTE_CONN_ID says otherwise (the rclone
# provider's own default, rclone_default, belongs to the generic provider, not to this project).
DEFAULT_REMOTE_CONN_ID = "backup_remote"


class SettingsError(ValueError):
    """A setting has a value that cannot work; the message names the variable."""


def parse_duration(name: str, text: str) -> timedelta:
    match = _DURATION_RE.match(text)
    if not match:
        raise SettingsError(f"{name}={text!r}: use a number with s, m, h, d or w, e.g. 7d or 8w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_schedule(name: str, text: str) -> str:
    """A cron expression (``0 2 * * 0``, ``@daily``) checked now, naming the variable, not when the DAG file fails to parse."""
    from croniter import croniter  # Airflow's own cron timetables parse with croniter

    if not croniter.is_valid(text):
        raise SettingsError(f"{name}={text!r}: not a cron expression; use five fields, e.g. '0 2 * * 0' (Sundays 02:00), or @daily")
    return text


def _webhook_url(url: str) -> str | None:
    if url and urlsplit(url).scheme not in ("http", "https"):
        # The URL holds the webhook's secret: name the variable, never the value.
        raise SettingsError("BACKUP_ALERT_WEBHOOK_URL: must be an http:// or https:// URL")
    return url or None


@dataclass(frozen=True)
class SourceDatabase:
    """One database the DAGs back up: the connection it is read through and the remote folder its backups live in.

    ``name`` is what operators type (``backupctl --database``) and what the Airflow
    UI shows for its mapped task instances.
    """

    name: str
    conn_id: str
    prefix: str


def parse_databases(text: str) -> tuple[SourceDatabase, ...]:
    """``BACKUP_DATABASES="shop=shop_source, blog=blog_source"``: each database's backups go under ``<name>/``."""
    databases: list[SourceDatabase] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, sep, conn_id = (part.strip() for part in entry.partition("="))
        if not sep or not conn_id:
            raise SettingsError(f"BACKUP_DATABASES: {entry!r} must be name=connection_id, e.g. shop=shop_source")
        if not _DATABASE_NAME_RE.match(name):
            raise SettingsError(f"BACKUP_DATABASES: {name!r} is not a usable name (letters, digits, '_', '.', '-'; at most 63)")
        if name in {d.name for d in databases}:
            raise SettingsError(f"BACKUP_DATABASES: {name!r} is named twice; each database needs a name of its own")
        databases.append(SourceDatabase(name=name, conn_id=conn_id, prefix=name))
    if not databases:
        raise SettingsError("BACKUP_DATABASES is set but names no database; e.g. BACKUP_DATABASES=shop=shop_source")
    return tuple(databases)


@dataclass(frozen=True)
class BackupSettings:
    # One database (the default): read through source_conn_id, stored under prefix.  Several: see ``databases``.
    source_conn_id: str = "backup_source"
    remote_conn_ids: tuple[str, ...] = (DEFAULT_REMOTE_CONN_ID,)  # the first is the primary; every backup goes to each
    prefix: str = "database"
    timezone: str = "UTC"
    full_schedule: str = "0 2 * * 0"
    incremental_schedule: str = "0 0,6,12,18 * * *"
    remote_full_retention: timedelta = timedelta(weeks=8)
    remote_incremental_retention: timedelta = timedelta(days=7)
    local_full_retention: timedelta = timedelta(weeks=2)
    local_incremental_retention: timedelta = timedelta(days=3)
    min_fulls: int = 1
    orphan_grace: timedelta = timedelta(days=1)
    local_dir: Path = PROJECT_DIR / "data" / "backups"
    zstd_level: int = 6
    zstd_threads: int = 0
    pg_bin_dir: str | None = None
    alert_emails: tuple[str, ...] = ()
    smtp_conn_id: str = "smtp_default"
    alert_from: str | None = None  # None: the SMTP connection's from_email extra decides
    alert_webhook_url: str | None = field(default=None, repr=False)  # holds the webhook's secret
    rpo: timedelta = timedelta(hours=6)
    rpo_grace: timedelta = timedelta(hours=1)
    max_full_age: timedelta = timedelta(days=8)
    drill_conn_id: str = "backup_drill"
    drill_schedule: str = "0 6 * * 0"
    task_retries: int = 2
    retry_delay: timedelta = timedelta(minutes=5)
    task_timeout: timedelta = timedelta(hours=6)
    databases: tuple[SourceDatabase, ...] = ()  # empty: the one database of source_conn_id / prefix
    staging_conn_ids: tuple[str, ...] = ()  # connections pg_restore_to_staging may restore into; empty: the DAG refuses every target
    pool: str = "pgbackup"  # the Airflow pool every capture task takes a slot of
    pool_slots: int = 2  # its size, for `airflow pools set` (airflow-init, the demo, the tests)
    remote_quota_bytes: int | None = None  # the remote's size when it cannot tell (rclone about); None: as the remote says

    def __post_init__(self) -> None:
        if not self.databases:
            object.__setattr__(self, "databases", (SourceDatabase(name=self.prefix.rsplit("/", 1)[-1], conn_id=self.source_conn_id, prefix=self.prefix),))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BackupSettings:
        env = os.environ if env is None else env
        defaults = cls()

        def text(name: str, default: str) -> str:
            return env.get(name, "").strip() or default

        def integer(name: str, default: int) -> int:
            raw = text(name, str(default))
            try:
                return int(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r}: must be a whole number") from None

        def schedule(name: str, default: str) -> str:
            return parse_schedule(name, text(name, default))

        def duration(name: str, default: timedelta) -> timedelta:
            raw = env.get(name, "").strip()
            return parse_duration(name, raw) if raw else default

        timezone = text("BACKUP_TIMEZONE", defaults.timezone)
        try:
            pendulum.timezone(timezone)
        except Exception:
            raise SettingsError(f"BACKUP_TIMEZONE={timezone!r}: not a time zone name (e.g. UTC, Europe/Berlin)") from None
        prefix = text("BACKUP_PREFIX", defaults.prefix).strip("/")
        if not prefix or ".." in prefix.split("/"):
            raise SettingsError(f"BACKUP_PREFIX={prefix!r}: must be a relative folder name such as 'database'")
        databases: tuple[SourceDatabase, ...] = ()
        if env.get("BACKUP_DATABASES", "").strip():
            databases = parse_databases(env["BACKUP_DATABASES"])
            for single in ("BACKUP_SOURCE_CONN_ID", "BACKUP_PREFIX"):
                if env.get(single, "").strip():
                    raise SettingsError(
                        f"{single} and BACKUP_DATABASES are both set: BACKUP_DATABASES names each database's connection "
                        f"and folder (name=connection_id, stored under <name>/); remove {single}"
                    )
        settings = cls(
            source_conn_id=text("BACKUP_SOURCE_CONN_ID", defaults.source_conn_id),
            remote_conn_ids=tuple(c.strip() for c in text("BACKUP_REMOTE_CONN_ID", ",".join(defaults.remote_conn_ids)).split(",") if c.strip()),
            prefix=prefix,
            timezone=timezone,
            full_schedule=schedule("BACKUP_FULL_SCHEDULE", defaults.full_schedule),
            incremental_schedule=schedule("BACKUP_INCREMENTAL_SCHEDULE", defaults.incremental_schedule),
            remote_full_retention=duration("BACKUP_REMOTE_FULL_RETENTION", defaults.remote_full_retention),
            remote_incremental_retention=duration("BACKUP_REMOTE_INCREMENTAL_RETENTION", defaults.remote_incremental_retention),
            local_full_retention=duration("BACKUP_LOCAL_FULL_RETENTION", defaults.local_full_retention),
            local_incremental_retention=duration("BACKUP_LOCAL_INCREMENTAL_RETENTION", defaults.local_incremental_retention),
            min_fulls=integer("BACKUP_MIN_FULLS", defaults.min_fulls),
            orphan_grace=duration("BACKUP_ORPHAN_GRACE", defaults.orphan_grace),
            local_dir=Path(text("BACKUP_LOCAL_DIR", str(defaults.local_dir))).expanduser(),
            zstd_level=integer("BACKUP_ZSTD_LEVEL", defaults.zstd_level),
            zstd_threads=integer("BACKUP_ZSTD_THREADS", defaults.zstd_threads),
            pg_bin_dir=env.get("BACKUP_PG_BIN_DIR") or None,
            rpo=duration("BACKUP_RPO", defaults.rpo),
            rpo_grace=duration("BACKUP_RPO_GRACE", defaults.rpo_grace),
            max_full_age=duration("BACKUP_MAX_FULL_AGE", defaults.max_full_age),
            drill_conn_id=text("BACKUP_DRILL_CONN_ID", defaults.drill_conn_id),
            drill_schedule=schedule("BACKUP_DRILL_SCHEDULE", defaults.drill_schedule),
            task_retries=integer("BACKUP_TASK_RETRIES", defaults.task_retries),
            retry_delay=duration("BACKUP_RETRY_DELAY", defaults.retry_delay),
            task_timeout=duration("BACKUP_TASK_TIMEOUT", defaults.task_timeout),
            alert_emails=tuple(a.strip() for a in env.get("BACKUP_ALERT_EMAILS", "").split(",") if a.strip()),
            smtp_conn_id=text("BACKUP_SMTP_CONN_ID", defaults.smtp_conn_id),
            alert_from=env.get("BACKUP_ALERT_FROM", "").strip() or None,
            alert_webhook_url=_webhook_url(env.get("BACKUP_ALERT_WEBHOOK_URL", "").strip()),
            databases=databases,
            staging_conn_ids=tuple(c.strip() for c in env.get("BACKUP_STAGING_CONN_IDS", "").split(",") if c.strip()),
            pool=text("BACKUP_POOL", defaults.pool),
            pool_slots=integer("BACKUP_POOL_SLOTS", defaults.pool_slots),
            remote_quota_bytes=integer("BACKUP_REMOTE_QUOTA_BYTES", 0) or None,
        )
        if settings.pool_slots < 1:
            raise SettingsError(f"BACKUP_POOL_SLOTS={settings.pool_slots}: must be at least 1 (pg_dumps allowed at once)")
        for staging in settings.staging_conn_ids:
            if staging in {d.conn_id for d in settings.databases}:
                raise SettingsError(f"BACKUP_STAGING_CONN_IDS names {staging!r}, a backup source's connection: a source is never a staging target")
        try:
            settings.compression()
        except ValueError as exc:
            raise SettingsError(f"BACKUP_ZSTD_LEVEL={settings.zstd_level} / BACKUP_ZSTD_THREADS={settings.zstd_threads}: {exc}") from None
        try:
            settings.remote_policy()
        except ValueError as exc:
            raise SettingsError(f"BACKUP_MIN_FULLS={settings.min_fulls}: {exc}") from None
        return settings

    def database(self, name: str | None) -> SourceDatabase:
        """The database called ``name``; ``None`` is the only one, and an error when there are several."""
        if name is None:
            if len(self.databases) == 1:
                return self.databases[0]
            raise SettingsError(f"several databases are configured ({self.database_names()}): choose one with --database")
        for database in self.databases:
            if database.name == name:
                return database
        raise SettingsError(f"no database called {name!r}; configured: {self.database_names()}")

    def database_names(self) -> str:
        return ", ".join(d.name for d in self.databases)

    def for_database(self, database: SourceDatabase) -> BackupSettings:
        """These settings narrowed to one database, so code written for one (``prefix``, ``source_conn_id``) serves each."""
        return replace(self, source_conn_id=database.conn_id, prefix=database.prefix, databases=(database,))

    @property
    def remote_conn_id(self) -> str:
        """The primary remote: incrementals chain on its catalog, drills and status read it first."""
        return self.remote_conn_ids[0]

    def default_args(self, **overrides) -> dict:
        """Task defaults every DAG shares: owner, retries with backoff, a timeout that kills stuck tools."""
        return {
            "owner": "backup",
            "retries": self.task_retries,
            "retry_delay": self.retry_delay,
            "retry_exponential_backoff": True,
            "execution_timeout": self.task_timeout,
            **overrides,
        }

    def compression(self) -> Compression:
        return Compression(level=self.zstd_level, threads=self.zstd_threads)

    def remote_policy(self) -> RetentionPolicy:
        return RetentionPolicy(self.remote_full_retention, self.remote_incremental_retention, min_fulls=self.min_fulls, orphan_grace=self.orphan_grace)

    def local_policy(self) -> RetentionPolicy:
        return RetentionPolicy(self.local_full_retention, self.local_incremental_retention, min_fulls=self.min_fulls, orphan_grace=self.orphan_grace)
