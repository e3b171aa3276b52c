"""Committed backups as Airflow Assets: one asset per remote, database folder and kind.

``pgbackup://<remote conn id>/<prefix>/<kind>`` (name ``pgbackup/<prefix>/<kind>@<remote>``)
gets an event each time a backup of that kind is committed there, with the
backup's id, kind, stored bytes and sha256 in its extra.  The commit task is
mapped over the databases, and a mapped task's declared outlets would all fire
for every instance, so it declares an ``AssetAlias`` per kind and attaches the
one concrete asset of its database at run time.  The drill DAG schedules on the
concrete full-backup assets of the primary remote.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias

from pgbackup.config.settings import BackupSettings


def backup_asset(remote_conn_id: str, prefix: str, kind: str) -> Asset:
    """The asset a committed ``kind`` backup under ``prefix`` on ``remote_conn_id`` updates."""
    folder = prefix.strip("/")
    return Asset(uri=f"pgbackup://{remote_conn_id}/{folder}/{kind}", name=f"pgbackup/{folder}/{kind}@{remote_conn_id}", group="pgbackup")


def committed_alias(kind: str) -> AssetAlias:
    """What the commit task declares as its outlet: resolved to :func:`backup_asset` of its database when it runs."""
    return AssetAlias(name=f"pgbackup-committed-{kind}")


def full_backup_assets(settings: BackupSettings) -> list[Asset]:
    """Every database's full-backup asset on the primary remote: what the drill waits for."""
    return [backup_asset(settings.remote_conn_id, d.prefix, "full") for d in settings.databases]
