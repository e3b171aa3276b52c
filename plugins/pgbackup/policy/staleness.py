"""Is the newest backup recent enough?  The RPO check the staleness DAG and ``backupctl status`` share.

Pure functions of the catalog and the clock, so the same decision is made
with or without Airflow, and tested at its boundaries without a remote.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from pgbackup.model.catalog import BrokenChainError, Catalog, chain_order
from pgbackup.model.manifest import BackupManifest, utc_iso

# A backup's finish this far after ``now`` is a clock problem, not skew between two machines.
CLOCK_SKEW = timedelta(minutes=5)


def restorable_backups(catalog: Catalog) -> list[BackupManifest]:
    """The backups that count as successful: whole, and with every backup they depend on present.

    A manifest whose object is missing, or an incremental whose chain is broken,
    would not restore, so it must not reset the staleness clock.
    """
    usable = []
    for backup in catalog.backups:
        try:
            catalog.chain(backup.id)
        except BrokenChainError:
            continue
        usable.append(backup)
    return usable


def staleness_warnings(
    backups: Iterable[BackupManifest], now: datetime, rpo: timedelta, grace: timedelta, max_full_age: timedelta
) -> list[str]:
    """One line per broken promise; empty when the newest backup and the newest full are recent enough.

    Ages are measured from ``finished_at`` (when the backup became usable) and
    are stale only when strictly older than the limit.  "Newest" is the newest
    in chain order, not the latest ``finished_at``: a backup stamped by a clock
    that ran ahead is reported (it finished "in the future"), and cannot hide
    that no backup came since.
    """
    backups = chain_order(backups)
    if not backups:
        return [f"no successful backup in the catalog at all (RPO {duration_text(rpo)} + {duration_text(grace)} grace)"]
    warnings = [
        f"backup {m.id} finished in the future ({utc_iso(m.finished_at)}, now {utc_iso(now)}): the clock is wrong, here or where it was taken"
        for m in backups if m.finished_at > now + CLOCK_SKEW
    ]
    newest = backups[-1]
    age = now - newest.finished_at
    if age > rpo + grace:
        warnings.append(
            f"no successful backup since {utc_iso(newest.finished_at)} ({duration_text(age)} ago, {newest.id}),"
            f" over the RPO of {duration_text(rpo)} + {duration_text(grace)} grace"
        )
    fulls = [m for m in backups if m.kind == "full"]
    if not fulls:
        warnings.append("no full backup in the catalog: incrementals alone cannot be restored")
    else:
        newest_full = fulls[-1]
        full_age = now - newest_full.finished_at
        if full_age > max_full_age:
            warnings.append(
                f"no full backup for more than {duration_text(max_full_age)}: the newest, {newest_full.id},"
                f" finished {utc_iso(newest_full.finished_at)} ({duration_text(full_age)} ago)"
            )
    return warnings


def duration_text(delta: timedelta) -> str:
    """``8d``, ``6h``, ``2d 3h``, ``1h 5m``, ``45s``: the two largest non-zero units, in the settings' own notation."""
    seconds = int(delta.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + " ".join(parts[:2]) if parts else "0s"
