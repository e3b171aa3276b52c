"""The row-key state costs what changed: no file is hashed twice, no parent line summed again, by an incremental.

A state's files are hashed while they are written; an unchanged table's file is linked
with the checksum and fingerprint its (proven) parent records; the parent's lines are
checked against its manifest by the fingerprint its listing records, not by summing them.
"""

import json
import threading

from chain_steps import execute, publish
from pgbackup.capture import rowstate
from pgbackup.capture.rowstate import CHECKSUMS, FileChecksum, RowKeyState, TableFingerprintSums

LINES = b"".join(b"0000\t(%05d)\t%032x\n" % (n, n * 7919) for n in range(1, 500))


def no_rehashing(monkeypatch):
    def refuse(cls, path):
        raise AssertionError(f"{path} was read again to hash it")

    monkeypatch.setattr(FileChecksum, "of", classmethod(refuse))


def test_a_written_file_s_checksum_is_taken_while_writing(tmp_path, monkeypatch):
    state = RowKeyState(tmp_path, "b1")
    state.write_buckets("public.t", 0, [LINES.splitlines()])
    no_rehashing(monkeypatch)
    state.mark_complete()
    monkeypatch.undo()
    assert state.damage() is None
    assert b"\n".join(line for block in state.blocks("public.t") for line in block) + b"\n" == LINES


def test_a_carried_file_keeps_the_parent_s_checksum_and_fingerprint(tmp_path, monkeypatch):
    parent = RowKeyState(tmp_path, "parent")
    fingerprint = parent.write_buckets("public.t", 0, [LINES.splitlines()])
    parent.mark_complete()
    child = RowKeyState(tmp_path, "child")
    no_rehashing(monkeypatch)
    child.carry(parent, "public.t")
    child.mark_complete()
    monkeypatch.undo()
    assert child.checksums().files == parent.checksums().files
    assert child.recorded_fingerprint("public.t") == fingerprint and child.damage() is None


def test_an_incremental_does_not_sum_the_parent_s_lines(shop_db, capture, client, monkeypatch):
    full = publish(capture.full(), client)
    execute(shop_db, "UPDATE payment SET amount = amount + 1 WHERE id IN (SELECT id FROM payment ORDER BY id LIMIT 3)",
            "DELETE FROM payment WHERE id = (SELECT max(id) FROM payment)")
    summed, add, here = [], TableFingerprintSums.add, threading.get_ident()  # the incremental reads on this thread only

    def counted(self, lines, sign=1):
        if threading.get_ident() == here:
            summed.append(len(lines))
        return add(self, lines, sign)

    monkeypatch.setattr(TableFingerprintSums, "add", counted)
    inc = capture.incremental(full)
    assert inc.kind == "incremental" and inc.details["captured"]["public.payment"]["deleted"] == 1
    parent_rows = full.details["fingerprints"]["public.payment"]["rows"]
    assert sum(summed) < parent_rows, "only removed and changed lines are summed, never every parent line"


def test_a_listing_whose_fingerprint_disagrees_with_the_manifest_promotes_to_full(shop_db, capture, client):
    full = publish(capture.full(), client)
    state = RowKeyState(capture.state_root, full.id)
    listing = json.loads((state.dir / CHECKSUMS).read_text())
    # One bucket and the table, one row more: the listing adds up (no damage), but not with the manifest.
    bucket = listing["files"][state.bucket_paths("public.payment")[0].name]
    for entry in (bucket, listing["tables"]["public.payment"]):
        entry["fingerprint"] = {"rows": entry["fingerprint"]["rows"] + 1, "hash": entry["fingerprint"]["hash"]}
    bucket["cells"][0] += 1
    (state.dir / CHECKSUMS).write_text(json.dumps(listing))
    assert state.damage() is None
    execute(shop_db, "DELETE FROM payment WHERE id = (SELECT max(id) FROM payment)")
    captured = capture.incremental(full)
    assert captured.kind == "full" and "records" in captured.details["promoted_from_incremental"]


def test_a_state_of_the_previous_format_promotes_to_full_once(shop_db, capture, client):
    full = publish(capture.full(), client)
    (RowKeyState(capture.state_root, full.id).dir / "FORMAT").write_text("pgbackup-rowstate-6\n")
    promoted = publish(capture.incremental(full), client)
    assert promoted.kind == "full" and "older format" in promoted.details["promoted_from_incremental"]
    execute(shop_db, "DELETE FROM payment WHERE id = (SELECT max(id) FROM payment)")
    assert capture.incremental(promoted).kind == "incremental"
    assert rowstate.FORMAT == "pgbackup-rowstate-7"
