"""``backupctl list``: the backups in the primary remote's catalog, as a table or JSON."""

from __future__ import annotations

import sys

from backupctl.output import dump_json, keyed_by_database, print_table
from backupctl.targets import primary_catalog, selected_databases
from pgbackup.config.settings import BackupSettings
from pgbackup.report.humanize import human_bytes


def cmd_list(args, settings: BackupSettings) -> int:
    databases = selected_databases(args, settings)
    if args.json:
        dump_json(keyed_by_database({db.name: catalog_rows(settings.for_database(db)) for db in databases}))
        return 0
    for db in databases:
        if len(databases) > 1:
            print(f"\n== {db.name} (connection {db.conn_id}) ==")
        list_one(settings.for_database(db))
    return 0


def catalog_rows(settings: BackupSettings) -> list[dict]:
    _, catalog = primary_catalog(settings)
    return [
        {
            "id": m.id, "kind": m.kind, "database": m.database, "source": m.source.key if m.source else None,
            "started_at": m.to_dict()["started_at"], "finished_at": m.to_dict()["finished_at"],
            "bytes": m.artifact.bytes, "sha256": m.artifact.sha256, "parent": m.parent_id,
            "path": m.artifact.path, "verified": m.verified,
        }
        for m in catalog.backups
    ]


def list_one(settings: BackupSettings) -> None:
    remote, catalog = primary_catalog(settings)
    if not catalog.backups:
        print(f"No backups under {remote.remote.spec(settings.prefix)}")
        return
    rows = [
        [m.id, m.kind, m.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"), human_bytes(m.artifact.bytes),
         m.artifact.sha256[:12], m.parent_id or "-", m.artifact.path]
        for m in catalog.backups
    ]
    headers = ["ID", "KIND", "STARTED", "SIZE", "SHA256", "PARENT", "PATH"]
    groups = catalog.source_groups()
    if len(groups) > 1:  # several installations write here: say whose each backup is
        owner = {m.id: key for key, members in groups.items() for m in members}
        rows = [[*row, owner[m.id]] for row, m in zip(rows, catalog.backups)]
        headers.append("SOURCE")
        print(f"warning: backups of {len(groups)} sources are stored here: {catalog.describe_sources(groups)}", file=sys.stderr)
    print_table(rows, headers)
