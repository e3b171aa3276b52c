"""The bucketed merge for one-integer keys (bucket function ``"int"``) against a model: keys at the edges of the
range (the top bucket and cell, -1, ±2⁶³), changed rows and current keys cut into uneven and empty blocks, merge
windows of 1–3 changes; the merged state, re-marked by another object or carried by a next incremental, stays intact."""

import tempfile
from collections import Counter
from pathlib import Path
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from pgbackup.capture import rowstate
from pgbackup.capture.rowstate import RowKeyState, cell_label, cell_of_printed, merge_change
from rowstate_model import draw_changes

OPS = st.sampled_from(["keep", "keep", "update", "delete", "delete", "delete and insert again", "re-sent"])


def values(bits):
    """Integer keys, with the ones at the edges of a table of ``2**bits`` buckets often."""
    top = (1 << bits) - 1
    edges = [top, top + (15 << bits), -1, -2, 0, 1, (1 << (bits + 4)) - 1, 2**63 - 1, -(2**63), top - 1, (top - 1) + (15 << bits)]
    return st.one_of(st.sampled_from(edges), st.integers(min_value=-5000, max_value=70000),
                     st.integers(min_value=0, max_value=15).map(lambda c: top + (c << bits) + (1 << (bits + 4)) * 3))


@st.composite
def scenarios(draw):
    """The parent's rows, the current rows and the changed ones, the bucket bits, and where the blocks are cut."""
    bits = draw(st.sampled_from([0, 1, 4, 11, 12]))
    keys = st.builds(lambda v: b"(%d)" % v, values(bits))
    parent, current, changed = draw_changes(draw, keys, OPS, 80, 30)
    return parent, current, changed, bits, draw(st.integers(min_value=0, max_value=10))


def cell(key, bits):
    return cell_of_printed(key, bits, "int")


def lines(rows, bits):
    return sorted(cell_label(cell(k, bits)) + b"\t" + k + b"\t" + h for k, h in rows.items())


class IntModelTable:
    """What a ServerTable reads of an int-keyed table, from dicts, in blocks cut at ``split`` (some of them empty)."""

    def __init__(self, current, changed, bits, split):
        self.current, self.bits, self.split = current, bits, split
        self.changed = len(changed)
        self._changed = lines(changed, bits)

    def changed_blocks(self):
        s = self.split
        return iter([self._changed[:s], [], self._changed[s : s + 1], self._changed[s + 1 :]])

    def count(self):
        return len(self.current)

    def cell_counts(self):
        return dict(Counter(cell(k, self.bits) for k in self.current))

    def key_blocks(self, cells):
        wanted = set(cells)
        keys = sorted(cell_label(cell(k, self.bits)) + b"\t" + k for k in self.current if cell(k, self.bits) in wanted)
        s = self.split
        return iter([keys[:s], keys[s : s + 2], [], keys[s + 2 :]])


def merged_exactly(parent, current, changed, bits, split):
    gone = set(parent) - set(current)
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        parent_state = RowKeyState(root, "parent")
        fingerprint = parent_state.write_buckets("public.t", bits, [lines(parent, bits)], "int")
        parent_state.mark_complete()
        child, deleted = RowKeyState(root, "child"), []
        result = merge_change(IntModelTable(current, changed, bits, split), parent_state, child, "public.t", fingerprint, deleted.extend)
        child.mark_complete()
        assert child.damage() is None, child.damage()
        assert [line for block in child.blocks("public.t") for line in block] == lines(current, bits)
        assert sorted(deleted) == sorted(gone)
        listing = (child.dir / rowstate.CHECKSUMS).read_text()
        RowKeyState(root, "child").mark_complete()  # re-marked by an object that neither wrote nor carried a file
        assert (child.dir / rowstate.CHECKSUMS).read_text() == listing
        grandchild = RowKeyState(root, "grandchild")  # and the next incremental, after no change, carries it intact
        merge_change(IntModelTable(current, {}, bits, split), child, grandchild, "public.t", result.fingerprint, deleted.extend)
        grandchild.mark_complete()
        assert grandchild.damage() is None and list(grandchild.blocks("public.t")) == list(child.blocks("public.t"))


@settings(max_examples=200, deadline=None)
@given(scenario=scenarios())
def test_int_keys_merge_exactly_at_the_edges_of_the_range(scenario):
    merged_exactly(*scenario)


@settings(max_examples=100, deadline=None)
@given(scenario=scenarios(), window=st.integers(min_value=1, max_value=3))
def test_int_keys_merge_exactly_in_windows_of_a_few_changes(scenario, window):
    with mock.patch.object(rowstate, "WINDOW_MAX_CHANGES", window):
        merged_exactly(*scenario)
