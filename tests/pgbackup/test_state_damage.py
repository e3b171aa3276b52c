"""A damaged row-key state is noticed, said in one line, and the capture promotes to a full whose restore is exact.

Each test takes a full of the sample shop, damages its state on disk as a failing disk,
a full file system or a stray editor would, changes the source, and takes an incremental.
Before states proved themselves, a truncated file crashed every incremental with
``binascii.Error`` until the weekly full, and a changed byte that kept the sort order
gave a committed incremental no restore could reproduce.
"""

import pytest
import zstandard

from chain_steps import execute, publish, restore, state_file_lines
from pgbackup.capture.rowstate import CHECKSUMS, RowKeyState, StateDamaged, encode_cells, line_blocks, split_name
from pgcompare import database_content

CHANGES = (
    "UPDATE payment SET amount = amount + 1 WHERE id IN (SELECT id FROM payment ORDER BY id LIMIT 3)",
    "DELETE FROM payment WHERE id = (SELECT max(id) FROM payment)",
)


def payment_state(capture, backup_id):
    """The biggest bucket file of public.payment."""
    return max(RowKeyState(capture.state_root, backup_id).bucket_paths("public.payment"), key=lambda p: p.stat().st_size)


def promoted_and_restored_exactly(shop_db, capture, client, make_database, parent):
    """The incremental after the damage: a full, whose restore equals the source. Returns its promotion reason."""
    execute(shop_db, *CHANGES)
    captured = capture.incremental(parent)
    assert captured.kind == "full", "a damaged parent state must never be merged"
    backup = publish(captured, client)
    assert database_content(restore(client, backup.id, make_database)) == database_content(shop_db)
    assert RowKeyState(capture.state_root, backup.id).damage() is None
    return captured.details["promoted_from_incremental"]


def test_a_truncated_state_file_promotes_to_full(shop_db, capture, client, make_database):
    full = publish(capture.full(), client)
    path = payment_state(capture, full.id)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    reason = promoted_and_restored_exactly(shop_db, capture, client, make_database, full)
    assert "public.payment" in reason and "is truncated" in reason


def test_one_byte_flipped_in_a_state_file_promotes_to_full(shop_db, capture, client, make_database):
    full = publish(capture.full(), client)
    path = payment_state(capture, full.id)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    reason = promoted_and_restored_exactly(shop_db, capture, client, make_database, full)
    assert "public.payment" in reason and "is corrupt" in reason


def test_a_key_byte_changed_with_the_order_kept_promotes_to_full(shop_db, capture, client, make_database):
    """A well-formed, sorted file with one key changed: only the recorded checksum can tell."""
    full = publish(capture.full(), client)
    path = payment_state(capture, full.id)
    lines = state_file_lines(path)
    lines[-1] = lines[-1].replace(b")\t", b"9)\t")  # the last key, one digit longer: still the last line
    assert lines == sorted(lines)
    path.write_bytes(b"".join(encode_cells(lines, split_name(path.name)[1])))  # a frame per cell, as written
    reason = promoted_and_restored_exactly(shop_db, capture, client, make_database, full)
    assert "public.payment" in reason and "recorded" in reason


def test_a_damaged_file_of_an_unchanged_table_is_not_carried_into_the_next_state(shop_db, capture, client, make_database):
    """An unchanged table's file is linked, not read, into the incremental's state: it is proven first."""
    full = publish(capture.full(), client)
    path = RowKeyState(capture.state_root, full.id).bucket_paths("public.customer")[0]
    path.write_bytes(path.read_bytes()[:-1])
    reason = promoted_and_restored_exactly(shop_db, capture, client, make_database, full)  # changes payment only
    assert "public.customer" in reason and "is truncated" in reason


def test_a_deleted_table_file_promotes_to_full(shop_db, capture, client, make_database):
    full = publish(capture.full(), client)
    payment_state(capture, full.id).unlink()
    reason = promoted_and_restored_exactly(shop_db, capture, client, make_database, full)
    assert "lacks public.payment" in reason


def test_a_deleted_checksum_file_promotes_to_full(shop_db, capture, client, make_database):
    full = publish(capture.full(), client)
    (RowKeyState(capture.state_root, full.id).dir / CHECKSUMS).unlink()
    reason = promoted_and_restored_exactly(shop_db, capture, client, make_database, full)
    assert "checksum file" in reason and "is missing" in reason


def test_damage_found_while_merging_promotes_to_full(shop_db, capture, client, make_database, monkeypatch):
    """Should a file break after the up-front check, reading it raises StateDamaged, which promotes the same way."""
    full = publish(capture.full(), client)
    path = payment_state(capture, full.id)
    path.write_bytes(path.read_bytes()[:-3])
    monkeypatch.setattr(RowKeyState, "damage", lambda self: None)
    reason = promoted_and_restored_exactly(shop_db, capture, client, make_database, full)
    assert "does not add up" in reason and "is truncated" in reason


# -- the state on its own, without a capture ----------------------------------------------

LINES = b"".join(b"0000\t(%05d)\t%032x\n" % (n, n * 7919) for n in range(1, 2000))


def written_state(tmp_path, complete=True):
    state = RowKeyState(tmp_path, "b1")
    state.write_buckets("public.t", 0, [LINES.splitlines()])
    if complete:
        state.mark_complete()
    return state


def read_back(state, table="public.t"):
    """Every line of the table: through the listing when complete, else the file as a full reads its own back."""
    if state.exists():
        return [line for block in state.blocks(table) for line in block]
    return [line for block in line_blocks(state.path(table, 0)) for line in block]


def test_an_intact_complete_state_has_no_damage_and_reads_back(tmp_path):
    state = written_state(tmp_path)
    assert state.damage() is None
    assert b"".join(line + b"\n" for line in read_back(state)) == LINES



def test_cells_that_do_not_add_up_to_their_bucket_are_damage(tmp_path):
    """The per-cell counts are the count algebra's parent rows: a listing whose cells miss a row is never trusted."""
    import json

    state = written_state(tmp_path)
    listing = json.loads((state.dir / CHECKSUMS).read_text())
    entry = listing["files"][state.path("public.t", 0).name]
    assert sum(entry["cells"]) == 1999 and entry["cells"][0] == 1999
    entry["cells"][0], entry["cells"][3] = 1998, 0
    (state.dir / CHECKSUMS).write_text(json.dumps(listing))
    assert "cells" in state.damage() and "do not add up to its 1999 rows" in state.damage()

@pytest.mark.parametrize("cut", [1, 5, 13, 100, -4, -1])
def test_reading_a_truncated_file_raises_state_damaged_not_a_decoding_error(tmp_path, cut):
    """Complete or not (a full reads its own file back before COMPLETE), a cut file is StateDamaged."""
    for complete in (True, False):
        state = written_state(tmp_path / str(complete), complete)
        path = state.path("public.t", 0)
        data = path.read_bytes()
        path.write_bytes(data[:cut] if cut > 0 else data[:cut])
        with pytest.raises(StateDamaged, match="truncated"):
            read_back(state)


def test_reading_a_flipped_byte_raises_state_damaged_even_before_complete(tmp_path):
    state = written_state(tmp_path, complete=False)
    path = state.path("public.t", 0)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(StateDamaged):
        read_back(state)


def test_data_after_the_frame_is_damage(tmp_path):
    state = written_state(tmp_path, complete=False)
    path = state.path("public.t", 0)
    path.write_bytes(path.read_bytes() + zstandard.ZstdCompressor().compress(b"000\t(0)\t" + b"0" * 32 + b"\n"))
    with pytest.raises(StateDamaged, match="data after its zstd frame"):
        read_back(state)


def test_a_file_not_listed_in_a_complete_state_is_damage(tmp_path):
    state = written_state(tmp_path)
    state.path("public.stray", 0).write_bytes(zstandard.ZstdCompressor().compress(LINES))
    with pytest.raises(StateDamaged, match="not listed"):
        read_back(state, "public.stray")
    assert "public.stray+000.rows.zst is not listed" in state.damage()


def test_damage_names_a_missing_complete_marker_an_older_format_and_an_unreadable_checksum_file(tmp_path):
    state = written_state(tmp_path)
    (state.dir / CHECKSUMS).write_text('{"format": "pgbackup-rowstate-3", "files": {')
    assert "checksum file" in state.damage() and "unreadable" in state.damage()
    (state.dir / "FORMAT").write_text("pgbackup-rowstate-2\n")
    assert "older format (pgbackup-rowstate-2" in state.damage()
    (state.dir / "COMPLETE").unlink()
    assert "no COMPLETE marker" in state.damage()
    assert "not on this machine" in RowKeyState(tmp_path, "elsewhere").damage()


def test_a_state_of_no_keyed_tables_is_complete_and_intact(tmp_path):
    state = RowKeyState(tmp_path / "never-created", "b1")
    state.mark_complete()
    assert state.exists() and state.damage() is None and state.checksums().files == {}


@pytest.mark.parametrize("tables", [["CREATE TABLE log (at timestamptz, line text)", "INSERT INTO log VALUES (now(), 'x')"], []],
                         ids=["only tables without a primary key", "no tables"])
def test_a_database_without_keyed_tables_gets_incrementals(make_database, tmp_path, client, tables):
    from pgbackup.capture.capture import BackupCapture
    from pgbackup.capture.compression import Compression
    from pgbackup.postgres.target import tools_for_server

    source = make_database("keyless")
    if tables:
        execute(source, *tables)
    num, version = source.server_version()
    capture = BackupCapture(source, tools_for_server(num), Compression(), local_dir=tmp_path / "local", prefix="database", server_version=version)
    full = publish(capture.full(), client)
    assert RowKeyState(capture.state_root, full.id).damage() is None
    if tables:
        execute(source, "INSERT INTO log VALUES (now(), 'y')")
    inc = publish(capture.incremental(full), client)
    assert inc.kind == "incremental"
    assert database_content(restore(client, inc.id, make_database)) == database_content(source)


def test_a_bucket_is_read_a_cell_at_a_time_but_proven_whole(tmp_path):
    """One frame a cell: a reader decodes the cells it asks for, and a byte flipped in another cell's frame is still found."""
    lines = sorted(b"%04x\t(%05d)\t%032x" % (n % 16, n, n * 7919) for n in range(1, 400))
    state = RowKeyState(tmp_path, "b1")
    state.write_buckets("public.t", 0, [lines])
    state.mark_complete()
    bucket = state.bucket_file("public.t", 0)
    assert bucket.lines({3}) == [line for line in lines if line.startswith(b"0003\t")]
    assert bucket.lines() == lines and len([frame for frame in bucket.frames if frame]) == 16
    entry = state.checksums().files[state.path("public.t", 0).name]
    assert sum(entry.frames) == entry.bytes and all(entry.frames)
    data = bytearray(state.path("public.t", 0).read_bytes())
    data[entry.frames[0] // 2] ^= 0x10  # inside cell 0's frame
    state.path("public.t", 0).write_bytes(bytes(data))
    with pytest.raises(StateDamaged, match="corrupt"):
        state.bucket_file("public.t", 0).lines({3})


def test_frames_that_do_not_add_up_to_their_file_are_damage(tmp_path):
    import json

    state = written_state(tmp_path)
    listing = json.loads((state.dir / CHECKSUMS).read_text())
    entry = listing["files"][state.path("public.t", 0).name]
    entry["frames"][0], entry["frames"][1] = entry["frames"][0] - 1, 1
    (state.dir / CHECKSUMS).write_text(json.dumps(listing))
    assert "frames" in state.damage() and "not one per non-empty cell" in state.damage()
