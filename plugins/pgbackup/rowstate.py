"""The row-key state: per table, every row's primary key and row hash, sorted, kept locally between backups.

An incremental finds deleted rows and keeps fingerprints up to date from its
parent's state, without re-reading whole tables.  One zstd file per table holds
lines ``<key>\\t<md5>``:

- ``<key>`` is the primary key as a row text (``ROW(id)::text``, e.g. ``(42)``), exactly
  as ``COPY ... TO STDOUT`` prints it — so the delete sections of the incremental
  object are the key bytes themselves;
- ``<md5>`` is ``md5(t::text)`` of the row, the per-row term of the table fingerprint
  (``fingerprint.py``): the fingerprint is the line count and the sums of the hashes' halves.

Lines are sorted by the server on the *printed* key (``COPY``'s escapes reproduced
in SQL, ``COLLATE "C"``), so bytewise order of the lines is their order: merging two
states is byte comparisons, never decoding.  Whoever reads a state checks that order
block by block (``sorted`` on sorted input is linear, in C) and fails loudly if it
does not hold: a wrongly ordered merge would hide deletes.

States of an older format (``*.keys.zst``, JSON keys, no hashes) are not read: the
capture promotes to a full backup, which writes this format.
"""

from __future__ import annotations

import binascii
import urllib.parse
import struct
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import zstandard
from psycopg2 import sql

from pgbackup.compression import CHUNK
from pgbackup.tables import TableInfo

FORMAT = "pgbackup-rowstate-2"
HASH_HEX = 32
# COPY text format escapes these bytes (backslash first); ordering by the escaped text orders the printed lines.
_COPY_ESCAPES = (("\\", "\\\\"), ("\b", "\\b"), ("\t", "\\t"), ("\n", "\\n"), ("\v", "\\v"), ("\f", "\\f"), ("\r", "\\r"))


class StateOrderError(RuntimeError):
    """A state file or key stream is not in bytewise order: merging it would give wrong deletes."""


def printed_key_order(key: sql.Composable) -> sql.Composable:
    """``key`` with COPY's escapes applied, ``COLLATE "C"``: sorting by it sorts the lines COPY prints."""
    expr = key
    for raw, escaped in _COPY_ESCAPES:
        expr = sql.SQL("replace({}, {}, {})").format(expr, sql.Literal(raw), sql.Literal(escaped))
    return sql.SQL('{} COLLATE "C"').format(expr)


def rows_query(table: TableInfo, where: sql.Composable | None = None) -> sql.Composable:
    """``COPY`` of every (or every ``where``) row's key and hash, in state order."""
    return sql.SQL("COPY (SELECT {k}, md5(t::text) FROM ONLY {t} AS t{w} ORDER BY {o}) TO STDOUT").format(
        k=table.key_text(), t=table.ident, w=sql.SQL(" WHERE ") + where if where is not None else sql.SQL(""),
        o=printed_key_order(table.key_text()),
    )


def keys_query(table: TableInfo) -> sql.Composable:
    """``COPY`` of every row's key only, in state order: what finds deletes when rows went missing."""
    return sql.SQL("COPY (SELECT {k} FROM ONLY {t} AS t ORDER BY {o}) TO STDOUT").format(
        k=table.key_text(), t=table.ident, o=printed_key_order(table.key_text()),
    )


def hash_sums(lines: list[bytes]) -> tuple[int, int]:
    """Sums of the signed 64-bit halves of each line's trailing md5, as the fingerprint's SQL computes them."""
    if not lines:
        return 0, 0
    raw = binascii.unhexlify(b"".join([line[-HASH_HEX:] for line in lines]))
    halves = struct.unpack(f">{2 * len(lines)}q", raw)
    return sum(halves[0::2]), sum(halves[1::2])


def line_blocks(path: Path) -> Iterator[list[bytes]]:
    """The lines of a zstd file (without newlines) in blocks of about ``CHUNK`` bytes."""
    with open(path, "rb") as raw:
        yield from text_blocks(zstandard.ZstdDecompressor().stream_reader(raw))


def text_blocks(reader) -> Iterator[list[bytes]]:
    pending = b""
    for chunk in iter(lambda: reader.read(CHUNK), b""):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        if lines:
            yield lines
    if pending:
        yield [pending]


def checked_order(blocks: Iterable[list[bytes]], what: str) -> Iterator[list[bytes]]:
    """Pass the blocks through, raising :class:`StateOrderError` unless every line is above the one before."""
    last = None
    for block in blocks:
        if (last is not None and block and block[0] <= last) or sorted(block) != block or len(set(block)) != len(block):
            raise StateOrderError(f"{what} is not in bytewise key order")
        if block:
            last = block[-1]
        yield block


class TableFingerprintSums:
    """A table's fingerprint as Python integers, so it can be adjusted row by row."""

    def __init__(self, rows: int = 0, high: int = 0, low: int = 0) -> None:
        self.rows, self.high, self.low = rows, high, low

    @classmethod
    def parse(cls, fingerprint: dict) -> TableFingerprintSums:
        high, low = fingerprint["hash"].split(":")
        return cls(int(fingerprint["rows"]), int(high), int(low))

    def add(self, lines: list[bytes], sign: int = 1) -> None:
        high, low = hash_sums(lines)
        self.rows += sign * len(lines)
        self.high += sign * high
        self.low += sign * low

    def to_dict(self) -> dict:
        """The same text ``table_fingerprint`` returns: numeric sums print as plain integers."""
        return {"rows": self.rows, "hash": f"{self.high}:{self.low}"}


class RowKeyState:
    """The row-key state of one backup: ``<root>/<backup id>/<table>.rows.zst``, then ``COMPLETE`` when whole."""

    def __init__(self, root: Path, backup_id: str) -> None:
        self.dir = Path(root) / backup_id

    def exists(self) -> bool:
        return (self.dir / "COMPLETE").is_file()

    def current_format(self) -> bool:
        """False for a state written by an older version (JSON keys without row hashes)."""
        marker = self.dir / "FORMAT"
        return marker.is_file() and marker.read_text().strip() == FORMAT

    def path(self, table: str) -> Path:
        return self.dir / f"{file_name(table)}.rows.zst"

    def writer(self, table: str):
        """A zstd stream writer for the table's file (a C object: COPY writes every row to it without Python)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        raw = open(self.path(table), "wb")
        return _OwningWriter(raw, zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False))

    def blocks(self, table: str) -> Iterator[list[bytes]]:
        """The table's lines in blocks, order checked.  A missing file is an error, never "no rows": that would hide deletes."""
        return checked_order(line_blocks(self.path(table)), f"row-key state {self.path(table)}")

    def fingerprint(self, table: str) -> TableFingerprintSums:
        sums = TableFingerprintSums()
        for block in self.blocks(table):
            sums.add(block)
        return sums

    def mark_complete(self) -> None:
        (self.dir / "FORMAT").write_text(FORMAT + "\n")
        (self.dir / "COMPLETE").write_text(datetime.now(timezone.utc).isoformat())


class _OwningWriter:
    """The compressor plus the file under it, closed together."""

    def __init__(self, raw, compressor) -> None:
        self.raw, self.compressor = raw, compressor
        self.write = compressor.write

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.compressor.close()
        finally:
            self.raw.close()


def file_name(table: str) -> str:
    """``schema.table`` as one safe file name: ``/`` or a leading ``..`` in a table's name must not leave the folder.

    Plain names (letters, digits, ``_.-``) stay as they are, so states written before keep their paths.
    """
    quoted = urllib.parse.quote(table, safe="_.-")
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted


class StateMismatch(RuntimeError):
    """The parent's state, the changed rows and the current keys do not add up: never guess, fail."""


def _key(line: bytes) -> bytes:
    return line[: -HASH_HEX - 1]


# At most this many changed lines in one window: a bulk insert (above the parent's last key, or
# between two neighbouring parent keys) is cut into windows instead of held whole in memory.
WINDOW_MAX_CHANGES = 50_000


def _windows(parent_blocks: Iterable[list[bytes]], changed_lines: Iterator[bytes], current_keys: Iterable[list[bytes]] | None,
             max_changes: int | None = None):
    """Walk the three sorted streams together, one parent block at a time.

    Yields ``(parent lines, changed lines, current keys)`` holding every line whose key
    is at most the window's last key (after the last block: all that is left), so each
    window can be compared with set operations in C instead of line by line in Python.
    A window never holds more than ``max_changes`` changed lines: when a block's key
    range has more, it is cut after the last changed key taken, and the block's
    remaining lines start the next window.  Memory follows the window, not the change.
    """
    import bisect

    max_changes = max_changes or WINDOW_MAX_CHANGES
    pending_change = next(changed_lines, None)
    key_blocks = iter(current_keys) if current_keys is not None else None
    key_block, key_at = [], 0

    def take_keys(limit: bytes | None) -> list[bytes] | None:
        nonlocal key_block, key_at
        if key_blocks is None:
            return None
        taken = []
        while True:
            end = len(key_block) if limit is None else bisect.bisect_right(key_block, limit, key_at)
            taken.extend(key_block[key_at:end])
            key_at = end
            if end < len(key_block):
                return taken
            key_block, key_at = next(key_blocks, None), 0
            if key_block is None:
                key_block = []
                return taken

    def in_range(line: bytes | None, limit: bytes | None) -> bool:
        return line is not None and (limit is None or _key(line) <= limit)

    for block in _with_final(parent_blocks):
        limit = _key(block[-1]) if block else None
        while True:
            changed = []
            while in_range(pending_change, limit) and len(changed) < max_changes:
                changed.append(pending_change)
                pending_change = next(changed_lines, None)
            if not in_range(pending_change, limit):
                yield block, changed, take_keys(limit)
                break
            # More changes in this block's range than a window may hold: cut after the last one taken.
            # Row texts are prefix-free, so every line of a key sorts below that key + TAB + 0xff.
            cut_key = _key(changed[-1])
            cut = bisect.bisect_right(block, cut_key + b"\t\xff")
            yield block[:cut], changed, take_keys(cut_key)
            block = block[cut:]


def _with_final(blocks: Iterable[list[bytes]]) -> Iterator[list[bytes]]:
    for block in blocks:
        if block:
            yield block
    yield []  # the window after the last parent line: inserts above every parent key


def count_updated(parent_blocks: Iterable[list[bytes]], changed_lines: Iterator[bytes]) -> int:
    """How many changed rows' keys were in the parent (updates, not inserts)."""
    import bisect

    updated = 0
    for block, changed, _ in _windows(parent_blocks, changed_lines, None):
        for line in changed:  # few per block: look each up, rather than take every parent line's key
            probe = line[: -HASH_HEX]  # the key and its tab (COPY prints tabs in keys as \\t): only that key starts so
            at = bisect.bisect_left(block, probe)
            updated += at < len(block) and block[at].startswith(probe)
    return updated


def merge_state(parent_blocks: Iterable[list[bytes]], changed_lines: Iterator[bytes], current_keys: Iterable[list[bytes]] | None,
                out, sums: TableFingerprintSums, on_deleted, parent_seen: TableFingerprintSums) -> int:
    """Write the new state — parent lines minus deleted and updated keys, plus the changed lines — into ``out``.

    ``sums`` (the parent's fingerprint) is adjusted to the new rows; ``on_deleted`` gets
    each window's deleted keys.  Without ``current_keys`` the caller has proved there
    were no deletes.  With them, every current key must be a parent key or a changed
    row and every changed row a current key, else :class:`StateMismatch`.  Returns the
    number of deleted keys; ``parent_seen`` gets the fingerprint of the parent's lines,
    for the caller to check against the parent's manifest.
    """
    deleted_total = 0
    for block, changed, current in _windows(parent_blocks, changed_lines, current_keys):
        parent_seen.add(block)
        changed_keys = {_key(line) for line in changed}
        if current is None and not changed:
            if block:
                out.write(b"\n".join(block) + b"\n")
            continue
        parent_keys = [_key(line) for line in block]
        parent_set = set(parent_keys)
        deleted: set[bytes] = set()
        if current is not None:
            current_set = set(current)
            if len(current_set) != len(current):
                raise StateMismatch("the current keys repeat a key")
            if not changed_keys <= current_set or not current_set <= parent_set | changed_keys:
                raise StateMismatch("current keys, changed rows and the parent's keys do not add up")
            deleted = parent_set - current_set
        remove = (changed_keys & parent_set) | deleted
        if remove:
            removed = [line for line, key in zip(block, parent_keys) if key in remove]
            kept = [line for line, key in zip(block, parent_keys) if key not in remove]
            sums.add(removed, -1)
        else:
            kept = block
        sums.add(changed)
        lines = sorted(kept + changed) if changed else kept
        if lines:
            out.write(b"\n".join(lines) + b"\n")
        if deleted:
            on_deleted(sorted(deleted))
            deleted_total += len(deleted)
    return deleted_total
