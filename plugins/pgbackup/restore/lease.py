"""Leases: a running restore or drill marks the backups it reads, so retention keeps them until it is done.

A lease is a small JSON object under ``<prefix>/leases/`` naming backup ids and
an expiry; it is removed when the restore ends, and an expired one (a crashed
restore) is ignored, so a lease can delay a deletion but never block it forever.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from pgbackup.model.layout import BackupLayout
from pgbackup.model.manifest import parse_utc, utc_iso

log = logging.getLogger(__name__)
DEFAULT_TTL = timedelta(hours=12)


class Lease:
    def __init__(self, store, layout: BackupLayout, backup_ids: Iterable[str], *, purpose: str, ttl: timedelta = DEFAULT_TTL) -> None:
        self.store = store
        self.path = layout.lease_path(uuid.uuid4().hex)
        self.body = {"backup_ids": sorted(backup_ids), "purpose": purpose, "expires_at": utc_iso(datetime.now(timezone.utc) + ttl)}

    def __enter__(self) -> Lease:
        self.store.put_bytes(json.dumps(self.body).encode(), self.path)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.store.delete(self.path)
        except Exception as error:  # an expired lease is harmless; never hide the restore's own outcome
            log.warning("Could not remove lease %s: %s", self.path, error)


def leased_backups(store, layout: BackupLayout, now: datetime) -> dict[str, str]:
    """``{backup_id: purpose}`` for every unexpired lease."""
    leased: dict[str, str] = {}
    paths = [o.path for o in store.list(layout.leases_folder()) if o.path.endswith(".json")]
    for path, raw in store.read_many(paths).items():
        try:
            body = json.loads(raw)
            if parse_utc(body["expires_at"]) > now:
                for backup_id in body["backup_ids"]:
                    leased[backup_id] = body.get("purpose", "restore")
        except (ValueError, KeyError, TypeError):
            log.warning("Ignoring unreadable lease %s", path)
    return leased
