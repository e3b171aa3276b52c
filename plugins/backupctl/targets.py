"""What a command acts on: the configured databases it was asked about, their remotes, their source's catalog.

Connections come from ``AIRFLOW_CONN_<ID>`` (read without Airflow, so restore
works where Airflow is gone); when one is not set there and Airflow is installed
here, from the ``airflow connections get`` command, i.e. from Airflow's own
connection store and secrets backends, in a child process.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from backupctl.airflow_run import airflow_binary, airflow_env
from pgbackup.config.connections import ConnectionMissing, pg_target_from_env, remote_from_env
from pgbackup.config.settings import BackupSettings, SourceDatabase
from pgbackup.model.catalog import Catalog
from pgbackup.model.identity import SourceIdentity
from pgbackup.model.layout import BackupLayout
from pgbackup.postgres.sources import own_backups, reachable_source_identity
from rclone_provider.client import Rclone, RemoteConfig

log = logging.getLogger("backupctl")


class RemoteRootMissing(LookupError):
    """The remote's root folder does not exist: not the same as a remote holding no backups."""


def remote_config(conn_id: str) -> RemoteConfig:
    """The remote from ``AIRFLOW_CONN_<ID>``, else from Airflow's connection store when Airflow is installed here."""
    try:
        return remote_from_env(conn_id)
    except ConnectionMissing as missing:
        extra = airflow_connection_extra(conn_id)
        if extra is None:
            raise missing from None
        return RemoteConfig.from_extra(conn_id, extra)


def airflow_connection_extra(conn_id: str) -> dict | None:
    """The connection's extra as ``airflow connections get -o json`` prints it, or None (no Airflow here, or no such connection).

    The answer holds the connection's secrets: it is read from the pipe, never logged.
    """
    try:
        binary = airflow_binary()
    except FileNotFoundError:
        return None
    result = subprocess.run([binary, "connections", "get", conn_id, "-o", "json"], env=airflow_env(),
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        log.info("Connection %s not in Airflow either (airflow connections get exited %s)", conn_id, result.returncode)
        return None
    conn = _json_list_in(result.stdout)
    if not conn:
        log.info("airflow connections get %s printed no JSON", conn_id)
        return None
    return conn[0].get("extra_dejson") or {}


def _json_list_in(output: str) -> list | None:
    """The JSON list a command printed, after whatever log lines Airflow wrote before it."""
    lines = output.splitlines()
    for start, line in enumerate(lines):
        if line.lstrip().startswith("["):
            try:
                value = json.loads("\n".join(lines[start:]))
            except ValueError:
                continue
            if isinstance(value, list):
                return value
    return None


def source_identity(settings: BackupSettings) -> SourceIdentity | None:
    """The identity of the configured source database, or None when its connection is not here or it cannot be reached."""
    try:
        target = pg_target_from_env(settings.source_conn_id)
    except ConnectionMissing:
        return None
    return reachable_source_identity(target)


def own_catalog(store, settings: BackupSettings, args) -> Catalog:
    """The catalog of this installation's source only: ``--source-id`` when given, else the source database's identity.

    Raises :class:`SourceAmbiguous` (one line listing the sources) when several
    sources' backups are stored here and neither says which is meant.
    """
    catalog = Catalog.load(store, BackupLayout(settings.prefix))
    source_id = getattr(args, "source_id", None)
    return own_backups(catalog, None if source_id else source_identity(settings), source_id)


def primary_catalog(settings: BackupSettings) -> tuple[Rclone, Catalog]:
    """The primary remote and its whole catalog; its problems go to stderr, a missing root is an error."""
    remote = Rclone(remote_config(settings.remote_conn_id))
    catalog = Catalog.load(remote, BackupLayout(settings.prefix))
    for problem in catalog.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if catalog.missing_root:
        raise RemoteRootMissing(catalog.missing_root_warning())
    return remote, catalog


def selected_databases(args, settings: BackupSettings) -> list[SourceDatabase]:
    """``--database NAME`` when given, else every configured database."""
    return [settings.database(args.database)] if args.database else list(settings.databases)


def one_database(args, settings: BackupSettings) -> BackupSettings:
    """The settings of the database a command must act on alone; with several configured, ``--database`` is required."""
    return settings.for_database(settings.database(args.database))
