"""Catalog.for_source: one source's backups, the others foreign; refusing to guess when the source is unknown."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from factories import SHOP_SOURCE, manifest
from pgbackup.model.catalog import BackupNotFound, Catalog, SourceAmbiguous
from pgbackup.model.identity import SourceIdentity

NOW = datetime(2026, 11, 29, 2, 0, tzinfo=timezone.utc)
OTHER = SourceIdentity("7300000000000000002", 16384, "shop", "UTF8", "C", "C")  # another cluster, same database name


def test_each_source_sees_only_its_own_and_the_other_as_foreign():
    mine = manifest("full", NOW - timedelta(hours=2))
    theirs = manifest("full", NOW - timedelta(hours=1), source=OTHER)
    catalog = Catalog(backups=[mine, theirs])
    own = catalog.for_source(SHOP_SOURCE)
    assert own.backups == [mine] and own.foreign == [theirs]
    assert own.foreign_warning().startswith(f"another source writes here: {OTHER.key} (database 'shop', 1 backup(s)")
    with pytest.raises(BackupNotFound, match="is another source's"):
        own.get(theirs.id)


def test_format_1_backups_belong_to_the_source_of_their_database_name():
    old = manifest("full", NOW - timedelta(days=3), source=None)
    new = manifest("incremental", NOW - timedelta(hours=1), parent=old)
    catalog = Catalog(backups=[old, new])
    assert catalog.for_source(None).backups == [old, new]  # an upgraded installation is one source, not two
    assert catalog.for_source(SHOP_SOURCE).backups == [old, new]
    assert catalog.for_source(SourceIdentity("1", 1, "blog", "UTF8", "C", "C")).backups == []


def test_an_unknown_source_with_two_stored_is_refused_with_the_choice():
    catalog = Catalog(backups=[manifest("full", NOW - timedelta(hours=2)), manifest("full", NOW, source=OTHER)])
    with pytest.raises(SourceAmbiguous) as refused:
        catalog.for_source(None)
    message = str(refused.value)
    assert "backups of 2 sources are stored under this prefix" in message and "--source-id SYSID/OID" in message
    assert SHOP_SOURCE.key in message and OTHER.key in message and "\n" not in message
    assert catalog.for_source_id(OTHER.key).backups == [catalog.backups[1]]
    with pytest.raises(BackupNotFound, match="no backups of source '9/9' here; the sources are: "):
        catalog.for_source_id("9/9")


def test_a_foreign_broken_chain_is_not_this_sources_problem():
    lost = manifest("full", NOW - timedelta(days=1), source=OTHER)
    theirs = manifest("incremental", NOW - timedelta(hours=1), parent=lost, source=OTHER)
    catalog = Catalog(backups=[manifest("full", NOW - timedelta(hours=2)), theirs])
    catalog.problems = [problem for _, problem in catalog._missing_links()]
    catalog.backup_problems = {theirs.id: list(catalog.problems)}
    assert catalog.problems and catalog.for_source(SHOP_SOURCE).problems == []


def test_the_next_incremental_builds_on_its_own_source_even_when_another_wrote_later():
    mine = manifest("full", NOW - timedelta(hours=2))
    theirs = manifest("full", NOW - timedelta(hours=1), source=OTHER)  # same database name, another cluster
    assert Catalog(backups=[mine, theirs]).for_source(SHOP_SOURCE).incremental_parent() == (mine, None)
    assert Catalog(backups=[mine, theirs]).for_source(OTHER).incremental_parent() == (theirs, None)


def test_an_incremental_never_builds_on_a_format_1_backup():
    old = manifest("full", NOW - timedelta(hours=2), source=None)
    parent, reason = Catalog(backups=[old]).for_source(SHOP_SOURCE).incremental_parent()
    assert parent is None and reason == f"the newest backup {old.id} has a format-1 manifest (no source identity): a new chain starts with a full"
