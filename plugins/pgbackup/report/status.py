"""The operator's view in one structure: recent backups, storage, schedules, the last drill, and warnings.

Built from the remote catalog (the truth about backups) plus, when Airflow is
reachable, what its metadata database says about runs.  ``backupctl status``
prints it; the Airflow UI's Backups page shows the same data.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from pgbackup.config.dag_ids import FULL_BACKUP, INCREMENTAL_BACKUP, RESTORE_DRILL
from pgbackup.config.settings import BackupSettings
from pgbackup.model.catalog import Catalog, SourceAmbiguous
from pgbackup.model.identity import SourceIdentity
from pgbackup.model.layout import KINDS, BackupLayout
from pgbackup.model.manifest import utc_iso
from pgbackup.policy.staleness import restorable_backups, staleness_warnings
from pgbackup.postgres.sources import own_backups
from pgbackup.report.growth import project_storage
from pgbackup.restore.drill import drill_point_text, latest_drill

LOCAL_DISK_WARN_FREE = 0.10  # warn below 10 % free on the local backup disk


def schedules(settings: BackupSettings) -> dict[str, str]:
    """Each DAG's cron, as the DAG files build their timetables from the same settings."""
    return {
        FULL_BACKUP: settings.full_schedule,
        INCREMENTAL_BACKUP: settings.incremental_schedule,
        RESTORE_DRILL: settings.drill_schedule,
    }


def next_run(cron: str, tz: str, now: datetime) -> datetime:
    """The next time ``cron`` fires in ``tz`` after ``now`` by croniter: the estimate used where Airflow is not installed.

    Where it is, ``backupctl status`` asks the DAGs' own timetable instead
    (``pgbackup_airflow.timetables.next_run``): the two differ around a
    daylight-saving change.
    """
    import pendulum
    from croniter import croniter

    local_now = pendulum.instance(now).in_timezone(tz)
    return pendulum.instance(croniter(cron, local_now).get_next(datetime)).in_timezone("UTC")


def schedule_interval(cron: str, tz: str, now: datetime) -> timedelta:
    """How often ``cron`` runs: the gap between its next two runs after ``now`` (the growth projection's cadence)."""
    first = next_run(cron, tz, now)
    return next_run(cron, tz, first + timedelta(seconds=1)) - first


def collect_status(store, settings: BackupSettings, *, now: datetime | None = None, runs: dict | None = None,
                   paused: dict | None = None, recent: int = 12, identity: SourceIdentity | None = None,
                   source_id: str | None = None, next_run_of: Callable[[str, str, datetime], datetime] = next_run) -> dict[str, Any]:
    """Everything ``status`` shows.  ``runs``/``paused`` come from Airflow when it is reachable (else None).

    Only the source's own backups count (``identity``, or ``source_id`` chosen by
    the operator); others under the prefix are a warning.  With neither and
    several sources stored, the warning lists them and the catalog is shown whole.
    """
    now = now or datetime.now(timezone.utc)
    layout = BackupLayout(settings.prefix)
    loaded = Catalog.load(store, layout)
    warnings = []
    try:
        catalog = own_backups(loaded, identity, source_id)
    except SourceAmbiguous as exc:
        catalog = loaded
        warnings.append(str(exc))
    warnings += [w for w in (catalog.missing_root_warning(), catalog.foreign_warning()) if w]
    storage = {kind: {"count": 0, "bytes": 0} for kind in KINDS}
    for m in catalog.backups:
        storage[m.kind]["count"] += 1
        storage[m.kind]["bytes"] += m.artifact.bytes
    orphan_bytes = sum(max(o.size, 0) for o in catalog.orphans)
    quota = store.about()
    drill = latest_drill(store, layout)
    if drill:
        drill = {**drill, "point": drill_point_text(drill)}  # what text output prints: a failed drill may have no backup id
    # Only backups that would restore count as fresh: a damaged one or a broken chain does not.
    warnings += staleness_warnings(restorable_backups(catalog), now, settings.rpo, settings.rpo_grace, settings.max_full_age)
    warnings += [f"catalog: {problem}" for problem in catalog.problems]
    if drill and not drill.get("ok"):
        warnings.append(f"the last restore drill ({drill.get('at')}) FAILED: {drill.get('error')}")
    local = _local_disk(settings)
    if local and local["free_fraction"] < LOCAL_DISK_WARN_FREE:
        warnings.append(f"local backup disk nearly full: {local['free_fraction']:.0%} free at {local['dir']}")
    dags = {}
    for dag_id, cron in schedules(settings).items():
        outcome = (runs or {}).get(dag_id, {})
        dags[dag_id] = {
            "schedule": cron,
            "timezone": settings.timezone,
            "next_run": utc_iso(next_run_of(cron, settings.timezone, now)),
            "last_success": _iso(outcome.get("success")),
            "last_failure": _iso(outcome.get("failed")),
            "paused": (paused or {}).get(dag_id),
        }
        if (paused or {}).get(dag_id):
            warnings.append(f"DAG {dag_id} is paused: it will not run on schedule")
    growth = project_storage(
        catalog.backups, settings.remote_policy(), now, full_interval=schedule_interval(settings.full_schedule, settings.timezone, now),
        incremental_interval=schedule_interval(settings.incremental_schedule, settings.timezone, now),
        # BACKUP_REMOTE_QUOTA_BYTES is the room the backups have; otherwise the remote's own total, less what else it holds
        quota_total=settings.remote_quota_bytes or (quota or {}).get("total"),
        quota_used=None if settings.remote_quota_bytes else (quota or {}).get("used"),
    )
    if growth.over_quota_at:
        warnings.append(f"storage projection: the backups outgrow the remote's quota by {growth.over_quota_at[:10]} "
                        f"(retention keeps {growth.fulls_kept} fulls); shorten retention or grow the remote")
    return {
        "now": utc_iso(now),
        "remote": store.describe(settings.prefix),
        "source": identity.key if identity else source_id,
        "backups": [
            {"id": m.id, "kind": m.kind, "started_at": utc_iso(m.started_at), "finished_at": utc_iso(m.finished_at),
             "bytes": m.artifact.bytes, "verified": bool(m.verified), "parent": m.parent_id}
            for m in catalog.backups[-recent:][::-1]
        ],
        "storage": {**storage, "orphans": {"count": len(catalog.orphans), "bytes": orphan_bytes},
                    "total_bytes": sum(s["bytes"] for s in storage.values()) + orphan_bytes, "quota": quota},
        "local": local,
        "dags": dags,
        "airflow": runs is not None,
        "drill": drill,
        "growth": growth.to_dict(),
        "warnings": warnings,
    }


def _iso(moment: datetime | None) -> str | None:
    return utc_iso(moment) if moment else None


def _local_disk(settings: BackupSettings) -> dict[str, Any] | None:
    path = settings.local_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    used_by_backups = sum(f.stat().st_size for f in settings.local_dir.rglob("*") if f.is_file()) if settings.local_dir.exists() else 0
    return {"dir": str(settings.local_dir), "backup_bytes": used_by_backups, "disk_free": usage.free,
            "disk_total": usage.total, "free_fraction": usage.free / usage.total if usage.total else 1.0}


def other_remotes(stores: dict[str, Any], layout: BackupLayout, primary_newest: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """A line per redundant remote (count, bytes, newest backup) and warnings when one lags or cannot be read."""
    summaries, warnings = [], []
    for name, store in stores.items():
        try:
            catalog = Catalog.load(store, layout)
        except Exception as exc:  # an unreachable copy is a warning, not a failure of status
            warnings.append(f"remote {name} cannot be read: {exc}")
            summaries.append({"remote": name, "error": str(exc)})
            continue
        newest = catalog.backups[-1].id if catalog.backups else None
        summaries.append({"remote": name, "count": len(catalog.backups), "bytes": sum(m.artifact.bytes for m in catalog.backups),
                          "newest": newest, "problems": catalog.problems})
        if primary_newest and primary_newest not in {m.id for m in catalog.backups}:
            warnings.append(f"remote {name} lacks the newest backup {primary_newest}")
        warnings += [f"remote {name}: {problem}" for problem in catalog.problems]
    return summaries, warnings
