"""A first deploy's catalog, as the drill and the staleness check judge it (``catalog_never_used``): nothing committed and
nothing stored but what the first backup may still be writing.  A backup's object lands before its manifest (upload,
verify, commit), so a check that looks in between must still see a first deploy, not lost backups."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from factories import manifest
from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from pgbackup.restore.drill import IN_FLIGHT_GRACE, catalog_never_used, first_backup_in_flight
from pgbackup.storage.store import LocalStore, stored_at

LAYOUT = BackupLayout("database")
NOW = datetime(2026, 12, 1, 16, 22, tzinfo=timezone.utc)


def store_object(root, kind: str, written: datetime, *, committed: bool = False) -> None:
    """A backup's object under ``root`` as an upload leaves it, written at ``written``; with its manifest if ``committed``."""
    m = manifest(kind, written)
    path = root / m.artifact.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * m.artifact.bytes)
    os.utime(path, (written.timestamp(), written.timestamp()))
    if committed:
        (root / LAYOUT.manifest_path(kind, m.id)).write_bytes(m.to_json())


def catalog(root) -> Catalog:
    return Catalog.load(LocalStore(root), LAYOUT)


def test_an_empty_prefix_is_a_first_deploy(tmp_path):
    assert catalog_never_used(catalog(tmp_path), now=NOW)


def test_the_first_backup_uploaded_but_not_yet_committed_is_still_a_first_deploy(tmp_path):
    store_object(tmp_path, "full", NOW - timedelta(seconds=20))
    loaded = catalog(tmp_path)
    assert [o.path for o in loaded.orphans] and not loaded.backups
    assert catalog_never_used(loaded, now=NOW)
    assert "1 object(s) are stored, its manifest not yet" in first_backup_in_flight(loaded)


def test_an_object_that_waited_past_the_grace_for_its_manifest_is_not_a_first_deploy(tmp_path):
    store_object(tmp_path, "full", NOW - IN_FLIGHT_GRACE - timedelta(minutes=1))
    assert not catalog_never_used(catalog(tmp_path), now=NOW)
    assert catalog_never_used(catalog(tmp_path), now=NOW, in_flight=timedelta(days=2))


def test_a_committed_backup_or_an_unreadable_manifest_is_never_a_first_deploy(tmp_path):
    store_object(tmp_path, "full", NOW - timedelta(minutes=5), committed=True)
    assert not catalog_never_used(catalog(tmp_path), now=NOW)
    other = tmp_path / "other"
    (other / "database" / "full").mkdir(parents=True)
    (other / LAYOUT.manifest_path("full", "20261201T160000Z-full-abcdef")).write_bytes(b"{not json")
    assert catalog(other).problems and not catalog_never_used(catalog(other), now=NOW)


def test_an_object_of_unknown_age_is_never_taken_for_one_in_flight(tmp_path):
    store_object(tmp_path, "full", NOW)
    loaded = catalog(tmp_path)
    unknown = [type(o)(path=o.path, size=o.size, mod_time="") for o in loaded.orphans]
    assert not catalog_never_used(Catalog(orphans=unknown), now=NOW)


def test_stored_at_reads_rclone_and_local_modification_times():
    assert stored_at("2026-12-01T16:22:14.826123456Z") == datetime(2026, 12, 1, 16, 22, 14, 826123, tzinfo=timezone.utc)
    assert stored_at("2026-12-01T17:22:14+01:00") == datetime(2026, 12, 1, 16, 22, 14, tzinfo=timezone.utc)
    assert stored_at("2026-12-01T16:22:14") is None  # no time zone: unknown
    assert stored_at("") is None and stored_at("yesterday") is None


def test_a_file_renamed_while_the_local_store_lists_it_is_left_out_not_an_error(tmp_path, monkeypatch):
    """A capture renames its ``.partial`` when it finishes: the listing that saw the old name must not fail on it."""
    from pathlib import Path

    from pgbackup.storage.store import LocalStore

    (tmp_path / "database").mkdir()
    (tmp_path / "database" / "kept.dump.zst").write_bytes(b"k")
    (tmp_path / "database" / "gone.dump.zst.partial").write_bytes(b"g")
    real_stat, calls = Path.stat, []

    def stat(self, *args, **kwargs):
        if self.name.endswith(".partial"):
            calls.append(self.name)
            if len(calls) == 2:  # is_file() saw it; it is renamed before the listing's own stat()
                self.rename(self.with_name(self.name.removesuffix(".partial")))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    listed = LocalStore(tmp_path).list("database")
    assert "database/kept.dump.zst" in [o.path for o in listed] and not any(o.path.endswith(".partial") for o in listed)
