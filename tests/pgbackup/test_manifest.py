import json
from datetime import datetime, timezone

import pytest
from factories import manifest
from pgbackup.manifest import FORMAT_VERSION, BackupManifest, ManifestError

STARTED = datetime(2026, 11, 29, 2, 0, 5, tzinfo=timezone.utc)


def test_round_trip_keeps_every_field():
    full = manifest("full", STARTED)
    inc = manifest("incremental", STARTED.replace(hour=6), parent=full)
    for original in (full, inc):
        assert BackupManifest.from_json(original.to_json(), source="m.json") == original


def test_times_are_utc_iso8601():
    data = json.loads(manifest("full", STARTED).to_json())
    assert data["started_at"] == "2026-11-29T02:00:05Z"
    assert data["format_version"] == FORMAT_VERSION


@pytest.mark.parametrize("cut", [1, 10, 100, -2])
def test_truncated_manifest_is_refused_with_its_path(cut):
    raw = manifest("full", STARTED).to_json()[:cut]
    with pytest.raises(ManifestError, match="database/full/x.manifest.json"):
        BackupManifest.from_json(raw, source="database/full/x.manifest.json")


def test_manifest_from_a_newer_format_is_refused():
    data = json.loads(manifest("full", STARTED).to_json())
    data["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ManifestError, match="newer than this tool understands"):
        BackupManifest.from_json(json.dumps(data), source="m.json")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("id", "yesterday", "not a backup id"),
        ("kind", "differential", "kind"),
        ("format", "something-else", "not a pgbackup-manifest"),
    ],
)
def test_invalid_fields_are_named(field, value, message):
    data = json.loads(manifest("full", STARTED).to_json())
    data[field] = value
    with pytest.raises(ManifestError, match=message):
        BackupManifest.from_json(json.dumps(data), source="m.json")


def test_bad_sha256_is_refused():
    data = json.loads(manifest("full", STARTED).to_json())
    data["artifact"]["sha256"] = "abc"
    with pytest.raises(ManifestError, match="sha256"):
        BackupManifest.from_json(json.dumps(data), source="m.json")


def test_missing_field_is_refused():
    data = json.loads(manifest("full", STARTED).to_json())
    del data["artifact"]
    with pytest.raises(ManifestError, match="incomplete"):
        BackupManifest.from_json(json.dumps(data), source="m.json")


def test_incremental_without_parent_is_refused():
    data = json.loads(manifest("incremental", STARTED, parent=manifest("full", STARTED.replace(hour=1))).to_json())
    data["parent_id"] = None
    with pytest.raises(ManifestError, match="parent_id"):
        BackupManifest.from_json(json.dumps(data), source="m.json")
