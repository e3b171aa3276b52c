"""Every setting of the backup system, read from ``BACKUP_*`` environment variables.

Environment variables, not Airflow Variables, because restore and status must
work on a machine where Airflow is gone; the same variables configure both.
``.env.example`` and the README list them all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pendulum

from pgbackup.capture.compression import Compression
from pgbackup.policy.retention import RetentionPolicy

_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# A database name is a remote folder, a local folder, a CLI argument and a Jinja literal: keep it plain.
_DATABASE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


# The remote connection this project uses unless BACKUP_REMOTE_CONN_ID says otherwise (the rclone
# provider's own default, rclone_default, belongs to the generic provider, not to this project).
DEFAULT_REMOTE_CONN_ID = "backup_remote"


class SettingsError(ValueError):
    """A setting has a value that cannot work; the message names the variable."""


def default_local_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where local copies go when ``BACKUP_LOCAL_DIR`` is not set: ``$XDG_DATA_HOME/pgbackup/backups``.

    That is ``~/.local/share/pgbackup/backups`` unless ``XDG_DATA_HOME`` says
    otherwise: the user's data folder, the same wherever the package is installed
    (a checkout, a venv, an image), so the DAGs and ``backupctl`` run by the same
    user find the same copies.  Deployments set ``BACKUP_LOCAL_DIR`` (docker
    compose does: ``/opt/airflow/backups``); every Celery worker needs the same one.
    """
    env = os.environ if env is None else env
    data_home = env.get("XDG_DATA_HOME", "").strip()
    return (Path(data_home) if data_home else Path.home() / ".local" / "share") / "pgbackup" / "backups"


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


# The settings read one variable each, as it is, with the dataclass's default when unset: field -> (variable, kind).
_PLAIN_VARIABLES = {
    "source_conn_id": ("BACKUP_SOURCE_CONN_ID", "text"),
    "full_schedule": ("BACKUP_FULL_SCHEDULE", "schedule"),
    "incremental_schedule": ("BACKUP_INCREMENTAL_SCHEDULE", "schedule"),
    "remote_full_retention": ("BACKUP_REMOTE_FULL_RETENTION", "duration"),
    "remote_incremental_retention": ("BACKUP_REMOTE_INCREMENTAL_RETENTION", "duration"),
    "local_full_retention": ("BACKUP_LOCAL_FULL_RETENTION", "duration"),
    "local_incremental_retention": ("BACKUP_LOCAL_INCREMENTAL_RETENTION", "duration"),
    "min_fulls": ("BACKUP_MIN_FULLS", "integer"),
    "orphan_grace": ("BACKUP_ORPHAN_GRACE", "duration"),
    "zstd_level": ("BACKUP_ZSTD_LEVEL", "integer"),
    "zstd_threads": ("BACKUP_ZSTD_THREADS", "integer"),
    "rpo": ("BACKUP_RPO", "duration"),
    "rpo_grace": ("BACKUP_RPO_GRACE", "duration"),
    "max_full_age": ("BACKUP_MAX_FULL_AGE", "duration"),
    "drill_conn_id": ("BACKUP_DRILL_CONN_ID", "text"),
    "drill_schedule": ("BACKUP_DRILL_SCHEDULE", "schedule"),
    "task_retries": ("BACKUP_TASK_RETRIES", "integer"),
    "retry_delay": ("BACKUP_RETRY_DELAY", "duration"),
    "task_timeout": ("BACKUP_TASK_TIMEOUT", "duration"),
    "smtp_conn_id": ("BACKUP_SMTP_CONN_ID", "text"),
    "pool": ("BACKUP_POOL", "text"),
    "pool_slots": ("BACKUP_POOL_SLOTS", "integer"),
}


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
    local_dir: Path = field(default_factory=default_local_dir)
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

        def names(name: str, default: str = "") -> tuple[str, ...]:
            """A comma-separated list (``a, b``), blanks dropped."""
            return tuple(part.strip() for part in text(name, default).split(",") if part.strip())

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
        readers: dict[str, Callable[[str, Any], Any]] = {"text": text, "integer": integer, "duration": duration, "schedule": schedule}
        plain = {name: readers[kind](variable, getattr(defaults, name)) for name, (variable, kind) in _PLAIN_VARIABLES.items()}
        settings = cls(
            **plain,
            remote_conn_ids=names("BACKUP_REMOTE_CONN_ID", ",".join(defaults.remote_conn_ids)),
            prefix=prefix,
            timezone=timezone,
            local_dir=Path(text("BACKUP_LOCAL_DIR", str(default_local_dir(env)))).expanduser(),
            pg_bin_dir=env.get("BACKUP_PG_BIN_DIR") or None,
            alert_emails=names("BACKUP_ALERT_EMAILS"),
            alert_from=env.get("BACKUP_ALERT_FROM", "").strip() or None,
            alert_webhook_url=_webhook_url(env.get("BACKUP_ALERT_WEBHOOK_URL", "").strip()),
            databases=databases,
            staging_conn_ids=names("BACKUP_STAGING_CONN_IDS"),
            remote_quota_bytes=integer("BACKUP_REMOTE_QUOTA_BYTES", 0) or None,
        )
        if settings.pool_slots < 1:
            raise SettingsError(f"BACKUP_POOL_SLOTS={settings.pool_slots}: must be at least 1 (pg_dumps allowed at once)")
        for staging in settings.staging_conn_ids:
            if staging in {d.conn_id for d in settings.databases}:
                raise SettingsError(f"BACKUP_STAGING_CONN_IDS names {staging!r}, a backup source's connection: a source is never a staging target")
        checks = [
            (settings.compression, f"BACKUP_ZSTD_LEVEL={settings.zstd_level} / BACKUP_ZSTD_THREADS={settings.zstd_threads}"),
            (settings.remote_policy, f"BACKUP_MIN_FULLS={settings.min_fulls}"),
        ]
        for build, variables in checks:  # the objects the settings make refuse what cannot work: say which variables
            try:
                build()
            except ValueError as exc:
                raise SettingsError(f"{variables}: {exc}") from None
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

    def compression(self) -> Compression:
        return Compression(level=self.zstd_level, threads=self.zstd_threads)

    def remote_policy(self) -> RetentionPolicy:
        return self._policy(self.remote_full_retention, self.remote_incremental_retention)

    def local_policy(self) -> RetentionPolicy:
        return self._policy(self.local_full_retention, self.local_incremental_retention)

    def _policy(self, full: timedelta, incremental: timedelta) -> RetentionPolicy:
        return RetentionPolicy(full, incremental, min_fulls=self.min_fulls, orphan_grace=self.orphan_grace)
