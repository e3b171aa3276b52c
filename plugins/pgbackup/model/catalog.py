"""The catalog: every committed backup in a store, read from the manifests.

Objects without a manifest are *orphans* (an interrupted upload, a failed run):
never listed as backups, reported so retention can clean them.  A manifest that
cannot be read, or that points at a missing or wrongly sized object, is a
*problem*, named with its path.

**Whose backups.**  Several installations may write under one prefix (two
sources configured alike, a copied configuration).  Every format-2 manifest
names its source (``details["source"]``, a :class:`SourceIdentity`);
:meth:`Catalog.for_source` keeps one source's backups and reports the others
as *foreign*: restore, retention, staleness and the incremental's parent only
ever see their own source.  Format-1 manifests name no source: they belong to
the source with their database name, as they always did.

**Order without trusting the clock.**  ``backups`` is in *chain order*: by
start time, except that backups of one cluster are ordered among themselves by
their snapshot's 64-bit ``xmax`` (the cluster's transaction counter, which a
wall clock set wrong cannot move backwards or forwards).  So the newest backup
is ``backups[-1]`` — the tip of the chain, since an incremental's snapshot is
always after its parent's — even when the machine's clock jumped a year ahead
for one backup and was set right again.  Backups without a recorded snapshot
(none are written today) fall back to their start time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pgbackup.model.identity import SourceIdentity
from pgbackup.model.layout import KINDS, MANIFEST_SUFFIX, BackupLayout
from pgbackup.model.manifest import BackupManifest, ManifestError
from pgbackup.storage.store import BackupStore, StoredObject

log = logging.getLogger(__name__)


class BackupNotFound(LookupError):
    """No backup matches what was asked for."""


class BrokenChainError(RuntimeError):
    """A backup cannot be restored because one it depends on is missing."""


class SourceAmbiguous(LookupError):
    """Backups of several sources are stored here and nothing says which one is meant."""


def chain_order(backups: Iterable[BackupManifest]) -> list[BackupManifest]:
    """``backups`` by start time, then re-ordered by snapshot ``xmax`` among the backups of each cluster (see the module doc)."""
    ordered = sorted(backups, key=lambda m: (m.started_at, m.id))
    clusters: dict[str, list[int]] = {}
    for position, m in enumerate(ordered):
        cluster, xmax = _cluster_and_xmax(m)
        if cluster is not None:
            clusters.setdefault(cluster, []).append(position)
    for positions in clusters.values():
        members = sorted((ordered[p] for p in positions), key=lambda m: (_cluster_and_xmax(m)[1], m.started_at, m.id))
        for position, m in zip(positions, members):
            ordered[position] = m
    return ordered


def _cluster_and_xmax(m: BackupManifest) -> tuple[str | None, int | None]:
    snapshot = m.details.get("snapshot")
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("xmax"), int):
        return None, None
    source = m.details.get("source") if isinstance(m.details.get("source"), dict) else {}
    cluster = source.get("system_identifier") or snapshot.get("system_identifier")
    return (str(cluster), snapshot["xmax"]) if cluster else (None, None)


def source_key(m: BackupManifest) -> str | None:
    """The ``sysid/oid`` of the source a backup names; None for a format-1 manifest, which names none."""
    identity = m.source
    return identity.key if identity else None


@dataclass
class Catalog:
    backups: list[BackupManifest] = field(default_factory=list)
    orphans: list[StoredObject] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    damaged: set[str] = field(default_factory=set)  # ids whose object is missing or has the wrong size
    foreign: list[BackupManifest] = field(default_factory=list)  # other sources' backups under the same prefix
    backup_problems: dict[str, list[str]] = field(default_factory=dict)  # the problems above that concern one backup
    missing_root: str | None = None  # the remote's root, when that folder does not exist at all

    @classmethod
    def load(cls, store: BackupStore, layout: BackupLayout) -> Catalog:
        folders = {layout.folder(kind) for kind in KINDS}
        objects = [o for o in store.list(layout.prefix, recursive=True) if o.path.rsplit("/", 1)[0] in folders]
        catalog = cls()
        if not objects and hasattr(store, "check_readable"):
            store.check_readable()  # an empty catalog may be a wrong crypt password: say so rather than "no backups"
            if not store.root_exists():
                catalog.missing_root = store.describe("")
        by_path = {o.path: o for o in objects}
        claimed: set[str] = set()
        manifest_paths = [o.path for o in objects if o.path.endswith(MANIFEST_SUFFIX)]
        contents = store.read_many(manifest_paths)
        for path in manifest_paths:
            if path not in contents:
                catalog.problems.append(f"manifest {path} vanished while the catalog was read")
                continue
            try:
                manifest = BackupManifest.from_json(contents[path], source=path)
            except ManifestError as exc:
                catalog.problems.append(str(exc))
                claimed.add(path)
                continue
            claimed.update({path, manifest.artifact.path})
            stored = by_path.get(manifest.artifact.path)
            if stored is None:
                catalog._backup_problem(manifest.id, f"backup {manifest.id}: object {manifest.artifact.path} is missing")
            elif stored.size >= 0 and stored.size != manifest.artifact.bytes:
                catalog._backup_problem(
                    manifest.id,
                    f"backup {manifest.id}: object {manifest.artifact.path} has {stored.size} bytes, manifest says {manifest.artifact.bytes}",
                )
            catalog.backups.append(manifest)
        catalog.orphans = [o for o in objects if o.path not in claimed]
        catalog.backups = chain_order(catalog.backups)
        for backup_id, problem in catalog._missing_links():
            catalog.backup_problems.setdefault(backup_id, []).append(problem)
            catalog.problems.append(problem)
        return catalog

    def _backup_problem(self, backup_id: str, problem: str) -> None:
        self.damaged.add(backup_id)
        self.backup_problems.setdefault(backup_id, []).append(problem)
        self.problems.append(problem)

    def _missing_links(self) -> list[tuple[str, str]]:
        """A broken chain, loudly: each backup whose parent or base full has no manifest."""
        known = {m.id for m in self.backups}
        return [
            (m.id, f"backup {m.id} needs {needed}, which has no manifest: {m.id} and every backup built on it cannot be restored")
            for m in self.backups for needed in m.depends_on if needed not in known
        ]

    # -- whose backups ---------------------------------------------------------------------
    def source_groups(self) -> dict[str, list[BackupManifest]]:
        """Backups by source, keyed by ``sysid/oid``; format-1 ones join the one source of their database name, else ``database NAME``."""
        groups: dict[str, list[BackupManifest]] = {}
        names: dict[str, set[str]] = {}
        for m in self.backups:
            key = source_key(m)
            if key:
                groups.setdefault(key, []).append(m)
                names.setdefault(m.source.database, set()).add(key)
        for m in self.backups:
            if source_key(m) is None:
                owners = names.get(m.database, set())
                key = next(iter(owners)) if len(owners) == 1 else f"database {m.database}"
                groups.setdefault(key, []).append(m)
        return groups

    def describe_sources(self, groups: dict[str, list[BackupManifest]] | None = None) -> str:
        """``7300…/16384 (database 'shop', 3 backups, newest 2026…)`` for each source, '; '-separated."""
        groups = self.source_groups() if groups is None else groups
        parts = []
        for key, members in groups.items():
            named = next((m.source for m in members if m.source), None)
            database = named.database if named else members[0].database
            parts.append(f"{key} (database {database!r}, {len(members)} backup(s), newest {members[-1].id})")
        return "; ".join(parts)

    def for_source(self, identity: SourceIdentity | None) -> Catalog:
        """Only ``identity``'s backups, the others moved to ``foreign``.

        ``None`` (the source cannot be reached: disaster recovery) is fine while
        one source has backups here; with several, :class:`SourceAmbiguous`
        lists them and says how to choose.
        """
        if identity is None:
            groups = self.source_groups()
            if len(groups) > 1:
                raise SourceAmbiguous(
                    f"backups of {len(groups)} sources are stored under this prefix: {self.describe_sources(groups)}; "
                    "the source database cannot be reached to tell which is this installation's: choose one with --source-id SYSID/OID"
                )
            return self._narrowed(self.backups, [])
        mine, others = [], []
        for m in self.backups:
            named = m.source
            belongs = identity.same_database(named) if named else m.database == identity.database
            (mine if belongs else others).append(m)
        return self._narrowed(mine, others)

    def for_source_id(self, key: str) -> Catalog:
        """The backups of the source ``SYSID/OID`` (``--source-id``), as listed when the choice was ambiguous."""
        groups = self.source_groups()
        if key not in groups and groups:  # (an empty store, such as a fresh local copy, simply has none)
            raise BackupNotFound(f"no backups of source {key!r} here; the sources are: {self.describe_sources(groups) or 'none'}")
        keep = {m.id for m in groups.get(key, [])}
        return self._narrowed([m for m in self.backups if m.id in keep], [m for m in self.backups if m.id not in keep])

    def _narrowed(self, mine: list[BackupManifest], others: list[BackupManifest]) -> Catalog:
        other_ids = {m.id for m in others}
        foreign_problems = {p for backup_id in other_ids for p in self.backup_problems.get(backup_id, [])}
        return Catalog(
            backups=list(mine), orphans=list(self.orphans), problems=[p for p in self.problems if p not in foreign_problems],
            damaged=self.damaged - other_ids, foreign=[*self.foreign, *others], missing_root=self.missing_root,
            backup_problems={k: v for k, v in self.backup_problems.items() if k not in other_ids},
        )

    def missing_root_warning(self) -> str | None:
        if not self.missing_root:
            return None
        return (f"the remote root {self.missing_root} does not exist: nothing was ever stored there, "
                "or the connection's root (or bucket) is wrong")

    def foreign_warning(self) -> str | None:
        """``another source writes here: …`` when foreign backups share this prefix."""
        if not self.foreign:
            return None
        groups = Catalog(backups=self.foreign).source_groups()
        return f"another source writes here: {self.describe_sources(groups)}; its backups are never restored, pruned or chained on by this one"

    # -- decisions ----------------------------------------------------------------------------
    def incremental_parent(self) -> tuple[BackupManifest | None, str | None]:
        """The backup the next incremental builds on — the newest in chain order — or why it must be a full instead.

        Call on one source's catalog (:meth:`for_source`): another source's
        backup is never a parent.
        """
        if not self.backups:
            return None, "no full backup exists yet"
        newest = self.backups[-1]
        try:
            self.chain(newest.id)
        except BrokenChainError as exc:
            return None, f"the newest backup cannot be restored ({exc})"
        if newest.format_version < 2:
            return None, f"the newest backup {newest.id} has a format-{newest.format_version} manifest (no source identity): a new chain starts with a full"
        return newest, None

    # -- lookups ------------------------------------------------------------------------------
    def get(self, backup_id: str) -> BackupManifest:
        for manifest in self.backups:
            if manifest.id == backup_id:
                return manifest
        if any(m.id == backup_id for m in self.foreign):
            raise BackupNotFound(f"backup {backup_id!r} is another source's ({self.foreign_warning()})")
        raise BackupNotFound(f"no backup with id {backup_id!r}; `backupctl list` shows the ones there are")

    def fulls(self) -> list[BackupManifest]:
        return [m for m in self.backups if m.kind == "full"]

    def latest_full(self) -> BackupManifest | None:
        fulls = self.fulls()
        return fulls[-1] if fulls else None

    def latest_at(self, moment: datetime) -> BackupManifest:
        """The newest (in chain order) backup whose snapshot was taken at or before ``moment``."""
        candidates = [m for m in self.backups if m.started_at <= moment]
        if not candidates:
            first = min(m.started_at for m in self.backups).isoformat() if self.backups else "none"
            raise BackupNotFound(f"no backup at or before {moment.isoformat()} (the oldest is {first})")
        return candidates[-1]

    def chain(self, backup_id: str) -> list[BackupManifest]:
        """The backups to apply, base full first, to restore ``backup_id``; every link must be present and whole."""
        known = {m.id: m for m in self.backups}
        chain, current = [], known.get(backup_id)
        if current is None:
            raise BackupNotFound(f"no backup with id {backup_id!r}; `backupctl list` shows the ones there are")
        while True:
            if current.id in self.damaged:
                raise BrokenChainError(f"restoring {backup_id} needs {current.id}, whose object is missing or damaged")
            chain.append(current)
            if current.kind == "full":
                return list(reversed(chain))
            parent = known.get(current.parent_id or "")
            if parent is None:
                raise BrokenChainError(f"restoring {backup_id} needs {current.parent_id}, which is not in the catalog")
            current = parent
