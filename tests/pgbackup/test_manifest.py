import dataclasses
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import SHOP_SOURCE, manifest
from pgbackup.model.identity import SourceIdentity
from pgbackup.model.layout import KINDS, BackupLayout, is_backup_id, new_backup_id
from pgbackup.model.manifest import DETAIL_FIELDS, FORMAT_VERSION, BackupManifest, ManifestError, StoredArtifact, utc_iso

STARTED = datetime(2026, 11, 29, 2, 0, 5, tzinfo=timezone.utc)
# Every details field of the contract (format version 2), as the capture writes them.
FULL_DETAILS = {
    "source": SHOP_SOURCE.to_dict(),
    "snapshot": {"pg_snapshot": "750:760:751", "xmin": 750, "xmax": 760, "taken_at": "2026-11-29T02:00:05Z",
                 "system_identifier": SHOP_SOURCE.system_identifier, "timeline": 1, "wal_lsn": "0/1D748F0"},
    "tables": {'public."Order"': {"schema": "public", "name": "Order", "oid": 16390, "relfilenode": 16390, "kind": "r",
                                  "key_columns": ["id"]},
               "public.totals": {"schema": "public", "name": "totals", "oid": 16400, "relfilenode": 16401, "kind": "m",
                                 "key_columns": []}},
    "fingerprints": {'public."Order"': {"rows": 3, "hash": "12:-7"}, "public.totals": {"rows": 1, "hash": "0:5"}},
    "sequences": {'public."Order_id_seq"': {"schema": "public", "name": "Order_id_seq", "last_value": 3, "is_called": True}},
    "large_objects": {"count": 2, "hash": "4:4"},
    "settings": {"client_encoding": "UTF8", "DateStyle": "ISO, YMD"},
    "schema_sha256": "ab" * 32,
    "promoted_from_incremental": "no full backup exists yet",
    "dag_id": "pg_full_backup",
}


def complete(m: BackupManifest) -> BackupManifest:
    return dataclasses.replace(m, details=FULL_DETAILS, verified={"at": "2026-11-29T02:03:00Z", "method": "remote sha256"})


# -- every field filled, by Hypothesis: the stored form must give back exactly what was written -------------
_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)
_ints = st.integers(min_value=0, max_value=2**63 - 1)
_hash = st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1)).map(lambda p: f"{p[0]}:{p[1]}")
_sha256 = st.binary(min_size=32, max_size=32).map(bytes.hex)
_moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(timezone.utc)).map(
    lambda d: d.replace(microsecond=0))  # the stored form keeps whole seconds

# One strategy per entry of DETAIL_FIELDS, optional sub-fields included.
DETAIL_STRATEGIES = {
    "source": st.builds(SourceIdentity, system_identifier=st.none() | st.from_regex(r"\A[0-9]{19}\Z"), database_oid=_ints,
                        database=_names, encoding=_names, collate=_text, ctype=_text, locale_provider=st.sampled_from("cib"),
                        icu_locale=st.none() | _names).map(SourceIdentity.to_dict),
    "snapshot": st.fixed_dictionaries({"pg_snapshot": _text, "xmin": _ints, "xmax": _ints, "taken_at": _text,
                                       "system_identifier": st.none() | _text, "timeline": st.none() | _ints, "wal_lsn": st.none() | _text}),
    "tables": st.dictionaries(_names, st.fixed_dictionaries(
        {"schema": _names, "name": _names, "oid": _ints, "relfilenode": _ints, "kind": st.sampled_from("rpm"),
         "key_columns": st.lists(_names, max_size=3)}), min_size=1, max_size=3),
    "fingerprints": st.dictionaries(_names, st.fixed_dictionaries({"rows": _ints, "hash": _hash}), min_size=1, max_size=3),
    "sequences": st.dictionaries(_names, st.fixed_dictionaries({"schema": _names, "name": _names, "last_value": _ints,
                                                                "is_called": st.booleans()}), min_size=1, max_size=3),
    "large_objects": st.fixed_dictionaries({"count": _ints, "hash": _hash}),
    "settings": st.fixed_dictionaries({"client_encoding": _names}, optional={"DateStyle": _names, "IntervalStyle": _names}),
    "promoted_from_incremental": _names,
    "schema_sha256": _sha256,
}


def test_the_round_trip_strategies_cover_every_detail_field():
    assert set(DETAIL_STRATEGIES) == set(DETAIL_FIELDS)


@st.composite
def complete_manifests(draw) -> BackupManifest:
    """A version-2 manifest with no field left at its default: parent and base set, verified, every detail present."""
    kind = draw(st.sampled_from(KINDS))
    started = draw(_moments)
    backup_id = new_backup_id(kind, started)
    parent_id, base_full_id = new_backup_id("incremental", started - timedelta(hours=1)), new_backup_id("full", started - timedelta(days=1))
    details = {name: draw(strategy) for name, strategy in DETAIL_STRATEGIES.items()}
    details["dag_id"] = draw(_names)  # a field outside the schema is kept as written
    return BackupManifest(
        id=backup_id, kind=kind, database=details["source"]["database"], started_at=started,
        finished_at=started + timedelta(seconds=draw(st.integers(0, 2 * 86400))),
        server_version=draw(_names), pg_dump_version=draw(_names),
        artifact=StoredArtifact(path=BackupLayout("database").object_path(kind, backup_id), bytes=draw(_ints), sha256=draw(_sha256)),
        uncompressed_bytes=draw(_ints), compression={"algorithm": draw(_names), "level": draw(st.integers(-7, 22))},
        tool_version=draw(_names), parent_id=parent_id, base_full_id=base_full_id,
        verified={"at": utc_iso(started), "method": draw(_names)}, details=details, format_version=FORMAT_VERSION,
    )


@settings(max_examples=60, deadline=None)
@given(complete_manifests())
def test_round_trip_keeps_every_field(original):
    assert all(getattr(original, f.name) not in (None, {}) for f in dataclasses.fields(BackupManifest))
    read = BackupManifest.from_json(original.to_json(), source="m.json")
    for f in dataclasses.fields(BackupManifest):
        assert getattr(read, f.name) == getattr(original, f.name), f.name
    assert read == original
    assert read.source == SourceIdentity.from_dict(original.details["source"]) and read.source.to_dict() == original.details["source"]


def test_round_trip_keeps_every_field_of_the_captures_own_details():
    full = complete(manifest("full", STARTED))
    inc = complete(manifest("incremental", STARTED.replace(hour=6), parent=full))
    for original in (full, inc):
        read = BackupManifest.from_json(original.to_json(), source="m.json")
        assert read == original
        assert read.details == FULL_DETAILS and read.verified["method"] == "remote sha256" and read.format_version == 2
        assert read.source == SHOP_SOURCE


def test_ids_are_unique_within_one_second_and_both_forms_are_backup_ids():
    ids = {new_backup_id("full", STARTED) for _ in range(50)}
    assert len(ids) == 50 and all(i.startswith("20261129T020005Z-full-") for i in ids)
    assert all(is_backup_id(i) for i in ids) and is_backup_id("20261129T020005Z-full")
    assert not is_backup_id("20261129T020005Z-full-XYZ")


def test_format_1_manifest_without_source_is_still_read():
    data = json.loads(manifest("full", STARTED, source=None).to_json())
    assert data["format_version"] == 1 and data["details"] == {}
    read = BackupManifest.from_json(json.dumps(data), source="m.json")
    assert read.source is None and read.format_version == 1


def test_format_2_manifest_without_its_source_is_refused_by_name():
    data = json.loads(complete(manifest("full", STARTED)).to_json())
    del data["details"]["source"]
    with pytest.raises(ManifestError, match=r'm.json is invalid: details\["source"\] is missing'):
        BackupManifest.from_json(json.dumps(data), source="m.json")


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("source", "database_oid"), "16384", r'details\["source"\] \'database_oid\' must be int'),
        (("snapshot", "xmax"), None, r'details\["snapshot"\] \'xmax\' must be int'),
        (("tables", "public.totals", "kind"), "v", r"entry 'public.totals' 'kind' must be 'r', 'p' or 'm'"),
        (("fingerprints", 'public."Order"', "hash"), "12", r'must be a "high:low" hash'),
        (("sequences", 'public."Order_id_seq"', "is_called"), "yes", r"'is_called' must be bool"),
        (("large_objects", "count"), 2.5, r"'count' must be int"),
    ],
)
def test_a_mistyped_detail_is_refused_naming_the_field(path, value, message):
    data = json.loads(complete(manifest("full", STARTED)).to_json())
    holder = data["details"]
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    with pytest.raises(ManifestError, match=message):
        BackupManifest.from_json(json.dumps(data), source="m.json")


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
