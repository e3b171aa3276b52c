"""The row-key state: per table, every row's primary key and row hash, sorted, in hash buckets, kept locally between backups.

An incremental finds deleted rows and keeps fingerprints up to date from its
parent's state, without re-reading whole tables.  Each table's rows are split into
``2**bits`` *buckets* by a fixed function of the key (:func:`bucket_function`): for a
primary key of one integer column, the value's low ``bits`` bits; for any other key, the
top ``bits`` bits of the first 16 of ``md5(key text)`` (:func:`bucket_of`).  Each bucket
is cut the same way into ``CELLS`` (16) *cells*: the 4 bits above the bucket's of the
integer, or the next 4 bits of the md5 (:func:`cell_of_printed`).  The server computes
them (:func:`cell_sql`) and Python alike — never ``hashtext()`` or another internal
hash, whose values are no contract across majors.  ``bits`` is chosen per table by the
full (about ``ROWS_PER_BUCKET`` rows a bucket, at most ``2**MAX_BITS`` buckets) and kept,
with the function, along its chain.  A bucket is the unit of a file, a cell (about
128 rows) the unit that is read, merged and written: one file per non-empty bucket,
``<table>+<bucket, 3 hex digits>.rows.zst``, holds one zstd frame per non-empty cell, in
cell order, and the listing records each frame's size.  So an incremental decodes only
the cells with changed rows or deletes, and writes a changed bucket's file from their
new frames and the other cells' frames copied as bytes — after a 0.1 % change that is
about a tenth of the state, not all of it.  The lines are ``<label>\\t<key>\\t<md5>``:

- ``<label>`` is the bucket number in 3 lowercase hex digits and the cell in it in one
  more (fixed width, so bytewise order of lines is bucket order, then cell, then key);
- ``<key>`` is the primary key as a row text (``ROW(id)::text``, e.g. ``(42)``), exactly
  as ``COPY ... TO STDOUT`` prints it — so the delete sections of the incremental
  object are the key bytes themselves;
- ``<md5>`` is ``md5(t::text)`` of the row, the per-row term of the table fingerprint
  (``fingerprint.py``): the fingerprint is the line count and the sums of the hashes' halves.

Lines are sorted by the server on (cell, *printed* key) (``COPY``'s escapes reproduced
in SQL, ``COLLATE "C"``), so bytewise order of the lines is their order: merging two
states is byte comparisons, never decoding.  Whatever comes from the server (a full's
lines, an incremental's changed rows and current keys) is checked in that order block
by block (``sorted`` on sorted input is linear, in C) and fails loudly if it does not
hold: a wrongly ordered merge would hide deletes.

**What an incremental reads.**  Per cell of a table: ``p`` parent rows (the listing
records each bucket's row count per cell), ``c`` changed rows (xmin since the parent;
re-sent unchanged rows included), ``u`` of them whose key was in the parent
(updates, re-sends, deleted-and-inserted-again), ``n`` current rows.  Rows not changed
since the parent were all in the parent, so the parent rows deleted are
``g = p − n + c − u`` — never negative, else the state does not add up
(:class:`StateMismatch`).  The table's total ``g`` comes from one ``count(*)``; only when
it is positive are the per-cell ``n`` counted (one ``GROUP BY`` pass on the server), and
only cells with ``g > 0`` have their current keys read and compared — a few deletes
spread over a table read a sixteenth of the keys a per-bucket comparison would.  A
bucket with neither changes nor deletes is carried: its file hard-linked, its checksum,
fingerprint and cell counts taken from the proven parent's listing.  After the merge
each rewritten bucket must have lost exactly its cells' ``g`` and, when counted, hold
each cell's ``n``: anything else is a mismatch.

A state proves itself before it is trusted.  Each frame carries its content checksum;
``mark_complete`` writes ``CHECKSUMS.json`` (the format, every file's size, sha256 —
taken while the file was written, or carried from its proven parent —, the fingerprint
of its lines, their count per cell, which must sum to the fingerprint's rows, and the
size of each cell's frame, which must sum to the file's; per table its ``bits`` and
fingerprint, which must be the sum of its buckets'), then ``COMPLETE``.  A file is read
whole and checked against its sha256 before any frame of it is decoded.  :meth:`RowKeyState.damage`
re-checks all of it in one line of text, and reading a file that is truncated,
changed, missing or not listed raises :class:`StateDamaged` — a :class:`StateMismatch`,
on which the capture promotes to a full — never a zstd or hex decoding error.

States of an older format (``pgbackup-rowstate-6``: a bucket file of one frame;
``-5``: buckets without cells; ``-4`` and before: one file per table) are not read: the capture promotes to a full backup, which
writes this format.
"""

from __future__ import annotations

import binascii
import bisect
import hashlib
import itertools
import json
import math
import operator
import os
import shutil
import struct
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import zstandard
from psycopg2 import sql

from pgbackup.capture.compression import CHUNK
from pgbackup.postgres.naming import Identifier
from pgbackup.postgres.tables import TableInfo
from pgbackup.storage.store import write_replacing

FORMAT = "pgbackup-rowstate-7"
CHECKSUMS = "CHECKSUMS.json"
SUFFIX = ".rows.zst"
HASH_HEX = 32
BUCKET_HEX = 3  # a bucket's label (its file's name): 3 hex digits
CELL_BITS = 4  # each bucket is cut into 16 cells: the unit a delete is looked for in
CELLS = 1 << CELL_BITS
LABEL_HEX = BUCKET_HEX + 1  # a line's label: its bucket, then its cell in the bucket (one hex digit), then a tab
PREFIX = LABEL_HEX + 1
MAX_BITS = 12  # 4096 buckets at most: files a table has, links an incremental makes
ROWS_PER_BUCKET = 2048  # creating a file costs more than rewriting thousands of lines: few, fair-sized buckets
# An incremental holds a touched bucket in memory; past this many rows a bucket (a table that grew ~10x or more since its
# full chose its bits, below MAX_BITS), the incremental becomes a full, which cuts the table into more buckets.
OUTGROWN_ROWS_PER_BUCKET = 16 * ROWS_PER_BUCKET
# COPY text format escapes these bytes (backslash first); ordering by the escaped text orders the printed lines.
_COPY_ESCAPES = (("\\", "\\\\"), ("\b", "\\b"), ("\t", "\\t"), ("\n", "\\n"), ("\v", "\\v"), ("\f", "\\f"), ("\r", "\\r"))
_COPY_UNESCAPES = {b"\\" + escaped[1:].encode(): raw.encode() for raw, escaped in _COPY_ESCAPES}
_bucket_label = operator.itemgetter(slice(0, BUCKET_HEX))


class StateOrderError(RuntimeError):
    """A state file or key stream is not in bytewise order: merging it would give wrong deletes."""


class StateMismatch(RuntimeError):
    """The parent's state, the changed rows and the current keys do not add up: never guess, fail."""


class StateOutgrown(StateMismatch):
    """A table grew so far past the buckets its full chose that an incremental would hold too big a bucket at once:
    a full cuts the table into buckets anew."""


class StateDamaged(StateMismatch):
    """A state file is not what was written (truncated, changed, missing, not listed): nothing of it may be used."""


# -- buckets -------------------------------------------------------------------------------------


def bits_for(rows: float) -> int:
    """How many bucket bits a table of about ``rows`` rows gets: about ``ROWS_PER_BUCKET`` rows a bucket, 0 to ``MAX_BITS``."""
    if rows < 2 * ROWS_PER_BUCKET:
        return 0
    return max(0, min(MAX_BITS, round(math.log2(rows / ROWS_PER_BUCKET))))


def bucket_of(key_text: bytes, bits: int) -> int:
    """The bucket of a key, from its text as the server holds it (not COPY-escaped): what :func:`bucket_sql` computes."""
    return int.from_bytes(hashlib.md5(key_text).digest()[:2], "big") >> (16 - bits)


def copy_unescape(printed: bytes) -> bytes:
    """A key as ``COPY`` printed it, back to the text the server holds (the inverse of COPY's text-format escapes)."""
    if b"\\" not in printed:
        return printed
    out, at = [], 0
    while (slash := printed.find(b"\\", at)) >= 0:
        out.append(printed[at:slash])
        pair = printed[slash : slash + 2]
        if pair not in _COPY_UNESCAPES:
            raise StateDamaged(f"a key holds an escape COPY does not print: {printed[:80]!r}")
        out.append(_COPY_UNESCAPES[pair])
        at = slash + 2
    out.append(printed[at:])
    return b"".join(out)


def label(bucket: int) -> bytes:
    """A bucket as its lines begin and its file is named: 3 lowercase hex digits (their bytewise order is numeric order)."""
    return b"%03x" % bucket


def cell_label(cell: int) -> bytes:
    """A cell (``bucket << CELL_BITS | cell in the bucket``) as its lines begin: the bucket's label and one more hex digit."""
    return b"%04x" % cell


def cell_of(key_text: bytes, bits: int) -> int:
    """The cell of a key's text: the top ``bits + CELL_BITS`` bits of the first 16 of its md5 (its bucket's bits, then 4 more)."""
    return int.from_bytes(hashlib.md5(key_text).digest()[:2], "big") >> (16 - bits - CELL_BITS)


def bucket_sql(key: sql.Composable, bits: int) -> sql.Composable:
    """The bucket of ``key`` (a text expression) on the server: the top ``bits`` of the first 16 bits of its md5."""
    return sql.SQL("(('x' || left(md5({}), 4))::bit(16)::int >> {})").format(key, sql.Literal(16 - bits))


def cell_sql(key: sql.Composable, bits: int) -> sql.Composable:
    """The cell of ``key`` (a text expression) on the server: :func:`cell_of`."""
    return sql.SQL("(('x' || left(md5({}), 4))::bit(16)::int >> {})").format(key, sql.Literal(16 - bits - CELL_BITS))


def printed_key_order(key: sql.Composable, function: str = "md5") -> sql.Composable:
    """``key`` with COPY's escapes applied, ``COLLATE "C"``: sorting by it sorts the lines COPY prints.

    The printed key of a one-integer-column key (``"int"``: ``(42)``, ``(-7)``) has nothing
    COPY escapes, so it is sorted as it is: seven ``replace`` calls a row less, a third of the sort's cost.
    """
    if function == "int":
        return sql.SQL('{} COLLATE "C"').format(key)
    expr = key
    for raw, escaped in _COPY_ESCAPES:
        expr = sql.SQL("replace({}, {}, {})").format(expr, sql.Literal(raw), sql.Literal(escaped))
    return sql.SQL('{} COLLATE "C"').format(expr)



def _where(condition: sql.Composable | None) -> sql.Composable:
    return sql.SQL(" WHERE ") + condition if condition is not None else sql.SQL("")


INTEGER_TYPES = {"20", "21", "23"}  # int8, int2, int4 (a domain over one counts by its base type)


def bucket_function(table: TableInfo) -> str:
    """``"int"`` for a primary key of one integer column, else ``"md5"``: how the table's keys are put in buckets.

    An integer key's bucket is its value's low bits (two's complement, as Python's ``&``
    gives it for negative values too): the printed key ``(42)`` is the value, and the
    server computes it without rendering the key's text — the per-row cost of counting
    buckets drops from a row text and an md5 to an ``AND``.  Any other key: the md5 of its
    printed text.  Both are fixed functions of the key, never a server's internal hash.
    """
    if len(table.key_columns) == 1:
        for column in table.definition:
            name, _, base_type = column.rsplit(":", 2)
            if name == table.key_columns[0]:
                return "int" if base_type in INTEGER_TYPES else "md5"
    return "md5"


def bucket_of_printed(printed_key: bytes, bits: int, function: str) -> int:
    """The bucket of a key as ``COPY`` printed it (``(42)``, ``("a\\tb",7)``), under the table's bucket function."""
    return cell_of_printed(printed_key, bits, function) >> CELL_BITS


def cell_of_printed(printed_key: bytes, bits: int, function: str) -> int:
    """The cell of a key as ``COPY`` printed it: its bucket, then 4 bits more of the same function.

    For ``"int"``, the bucket is the value's low ``bits`` bits and the cell in it the 4
    bits above them (so consecutive keys fill every bucket, then every cell); for ``"md5"``,
    the top ``bits + 4`` bits of the first 16 of the md5 of the key's text.
    """
    if function == "int":
        value = int(printed_key[1:-1])
        return ((value & ((1 << bits) - 1)) << CELL_BITS) | ((value >> bits) & (CELLS - 1))
    return cell_of(copy_unescape(printed_key), bits)


def _cell_expr(table: TableInfo, bits: int, function: str, key_text: sql.Composable | None) -> sql.Composable:
    """The row's cell on the server (alias ``t``): from the key column for ``"int"``, else from ``key_text``."""
    if function == "int":
        column = sql.SQL("{}::int8").format(Identifier("t", table.key_columns[0]))
        return sql.SQL("((({c} & {m}) << {n}) | (({c} >> {b}) & {f}))").format(
            c=column, m=sql.Literal((1 << bits) - 1), n=sql.Literal(CELL_BITS), b=sql.Literal(bits), f=sql.Literal(CELLS - 1))
    assert key_text is not None
    return cell_sql(key_text, bits)


def rows_query(table: TableInfo, bits: int, where: sql.Composable | None = None, function: str | None = None,
               with_rows: bool = False) -> sql.Composable:
    """``COPY`` of every (or every ``where``) row's cell label, key and hash, in state order.

    ``OFFSET 0`` keeps the subquery apart, so the key's text is computed once a row
    (not once for the bucket, once for the output and once for the sort).  ``with_rows``
    adds the row's columns after its hash, as ``COPY`` of the table prints them: an
    incremental reads its changed rows once, for their state lines and its upserts alike.
    """
    function = function or bucket_function(table)
    aliases = [sql.Identifier(f"c{number}") for number in range(len(table.columns))] if with_rows else []
    columns = sql.SQL("").join(sql.SQL(", {} AS {}").format(Identifier("t", c), a) for c, a in zip(table.columns, aliases))

    def passed(alias: str) -> sql.Composable:
        return sql.SQL("").join(sql.SQL(", {}.{}").format(sql.Identifier(alias), a) for a in aliases)

    bucket = _cell_expr(table, bits, function, sql.SQL("r.k") if function == "md5" else None)
    if function == "int":  # the cell from the column, in the same scan
        inner = sql.SQL("SELECT {b} AS b, {k} AS k, md5(t::text) AS h{c} FROM ONLY {t} AS t{w} OFFSET 0").format(
            b=bucket, k=table.key_text(), c=columns, t=table.ident, w=_where(where))
    else:
        inner = sql.SQL("SELECT {b} AS b, r.k, r.h{p} FROM (SELECT {k} AS k, md5(t::text) AS h{c} FROM ONLY {t} AS t{w} OFFSET 0) AS r"
                        " OFFSET 0").format(b=bucket, p=passed("r"), k=table.key_text(), c=columns, t=table.ident, w=_where(where))
    return sql.SQL("COPY (SELECT lpad(to_hex(s.b), 4, '0'), s.k, s.h{p} FROM ({inner}) AS s ORDER BY s.b, {o}) TO STDOUT").format(
        p=passed("s"), inner=inner, o=printed_key_order(sql.SQL("s.k"), function))


def split_changed_line(line: bytes) -> tuple[bytes, bytes]:
    """A line of ``rows_query(..., with_rows=True)`` as its state line (bucket, key, hash) and its row as COPY prints it.

    The printed key holds no raw tab (COPY prints one as ``\\t``), so the key ends at the
    first tab after the label, and the hash is the fixed-width field after it.
    """
    end = line.find(b"\t", PREFIX) + 1 + HASH_HEX
    if end <= PREFIX + HASH_HEX or line[end : end + 1] != b"\t":
        raise StateDamaged(f"a changed row is not <bucket> TAB <key> TAB <row md5> TAB <columns>: {line[:80]!r}")
    return line[:end], line[end + 1 :]


def cell_counts_query(table: TableInfo, bits: int, function: str | None = None) -> sql.Composable:
    """Per non-empty cell, its current row count: one pass over the table, nothing sorted, nothing shipped but counts."""
    function = function or bucket_function(table)
    return sql.SQL("SELECT {c}, count(*) FROM ONLY {t} AS t GROUP BY 1").format(
        c=_cell_expr(table, bits, function, table.key_text()), t=table.ident)


def keys_query(table: TableInfo, bits: int, cells: Iterable[int], function: str | None = None) -> sql.Composable:
    """``COPY`` of the current keys of ``cells`` only (cell label, key), in state order.

    The filter is evaluated first, so only the chosen cells' keys are rendered (an
    integer key's cell needs no text at all) and sorted; asked for every cell, there is no filter.
    """
    function = function or bucket_function(table)
    cell = _cell_expr(table, bits, function, table.key_text())
    wanted = sorted(set(cells))
    # The array of the cell's own type: int8 = ANY(int8[]) is looked up in a hash table (PostgreSQL ≥ 14), a cross-type
    # int8 = ANY(int4[]) is a linear search per row.
    array = sql.SQL("int8[]" if function == "int" else "int4[]")
    where = (sql.SQL("") if len(wanted) == 1 << (bits + CELL_BITS)
             else sql.SQL(" WHERE {c} = ANY({l}::{a})").format(c=cell, l=sql.Literal(wanted), a=array))
    return sql.SQL(
        "COPY (SELECT lpad(to_hex(s.b), 4, '0'), s.k FROM (SELECT {c} AS b, {k} AS k FROM ONLY {t} AS t{w}"
        " OFFSET 0) AS s ORDER BY s.b, {o}) TO STDOUT"
    ).format(c=cell, k=table.key_text(), t=table.ident, w=where, o=printed_key_order(sql.SQL("s.k"), function))


def hash_sums(lines: list[bytes]) -> tuple[int, int]:
    """Sums of the signed 64-bit halves of each line's trailing md5, as the fingerprint's SQL computes them."""
    if not lines:
        return 0, 0
    try:
        raw = binascii.unhexlify(b"".join([line[-HASH_HEX:] for line in lines]))
        halves = struct.unpack(f">{2 * len(lines)}q", raw)
    except (binascii.Error, struct.error):
        bad = next((line for line in lines if not _is_state_line(line)), lines[0])
        raise StateDamaged(f"a line is not <bucket> TAB <key> TAB <row md5>: {bad[:80]!r}") from None
    return sum(halves[0::2]), sum(halves[1::2])


def _is_state_line(line: bytes) -> bool:
    tail = line[-HASH_HEX - 1 :]
    return len(tail) == HASH_HEX + 1 and tail[:1] == b"\t" and all(c in b"0123456789abcdef" for c in tail[1:])


@dataclass(frozen=True)
class FileChecksum:
    """What ``CHECKSUMS.json`` records of one bucket file: its size, the sha256 of its bytes, the fingerprint of its lines
    and their count per cell.

    The fingerprint (``{"rows", "hash"}``, as ``table_fingerprint`` gives it) is the
    bucket's share of the table's fingerprint; the cells' counts are the count algebra's
    parent rows, cell by cell; the frames' sizes say where each cell's lines are in the
    file, so one cell is read without the others: the sha256 ties them all to this listing.
    None when not known.
    """

    bytes: int
    sha256: str
    fingerprint: dict | None = None
    cells: tuple[int, ...] | None = None  # the bucket's row count in each of its CELLS cells
    frames: tuple[int, ...] | None = None  # the size of each cell's zstd frame in the file (0: an empty cell, no frame)

    def same_file(self, other: FileChecksum) -> bool:
        return (self.bytes, self.sha256) == (other.bytes, other.sha256)

    @classmethod
    def of(cls, path: Path) -> FileChecksum:
        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as raw:
            for chunk in iter(lambda: raw.read(CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
        return cls(size, digest.hexdigest())


@dataclass(frozen=True)
class TableListing:
    """One table in ``CHECKSUMS.json``: its bucket bits, its fingerprint and, per non-empty bucket, its file's checksum."""

    bits: int
    fingerprint: dict
    buckets: dict[int, FileChecksum] = field(default_factory=dict)
    function: str = "md5"  # bucket_function's: "int" or "md5"

    def cell_rows(self, cell: int) -> int:
        """The parent rows in one cell (``bucket << CELL_BITS | cell in the bucket``)."""
        entry = self.buckets.get(cell >> CELL_BITS)
        return entry.cells[cell & (CELLS - 1)] if entry is not None and entry.cells else 0


@dataclass(frozen=True)
class StateChecksums:
    """``CHECKSUMS.json``: the state's format, per file name its :class:`FileChecksum`, per table its bits and fingerprint."""

    format: str
    files: dict[str, FileChecksum]
    tables: dict[str, dict] = field(default_factory=dict)  # {"bits": int, "function": str, "fingerprint": {...}}

    def to_json(self) -> str:
        files = {name: {"bytes": c.bytes, "sha256": c.sha256, **({"fingerprint": c.fingerprint} if c.fingerprint else {}),
                        **({"cells": list(c.cells)} if c.cells is not None else {}),
                        **({"frames": list(c.frames)} if c.frames is not None else {})}
                 for name, c in sorted(self.files.items())}
        tables = {name: {"bits": t["bits"], "function": t["function"], "fingerprint": t["fingerprint"]} for name, t in sorted(self.tables.items())}
        return json.dumps({"format": self.format, "files": files, "tables": tables}, indent=1, sort_keys=True) + "\n"

    @classmethod
    def parse(cls, text: str) -> StateChecksums:
        """Raises ValueError (or KeyError, TypeError) unless ``text`` is a whole checksum file."""
        data = json.loads(text)
        files = {str(name): FileChecksum(int(c["bytes"]), str(c["sha256"]), _fingerprint(c.get("fingerprint")), _cells(c.get("cells")),
                                         _cells(c.get("frames"), "frames"))
                 for name, c in data["files"].items()}
        tables = {str(name): {"bits": int(t["bits"]), "function": str(t["function"]), "fingerprint": _fingerprint(t["fingerprint"])}
                  for name, t in data.get("tables", {}).items()}
        return cls(str(data["format"]), files, tables)

    def table(self, name: str) -> TableListing | None:
        """The table's listing (its buckets gathered from the files), or None when the table is not listed."""
        entry = self.tables.get(name)
        if entry is None:
            return None
        index = self.__dict__.get("_by_table")
        if index is None:
            index = {}
            for file, checksum in self.files.items():
                owner, bucket = split_name(file)
                index.setdefault(owner, {})[bucket] = checksum
            object.__setattr__(self, "_by_table", index)
        return TableListing(entry["bits"], entry["fingerprint"], dict(index.get(name, {})), entry["function"])


def _cells(data, what: str = "cells") -> tuple[int, ...] | None:
    if data is None:
        return None
    if not isinstance(data, list) or len(data) != CELLS:
        raise ValueError(f"a bucket's {what} are {data!r}, not {CELLS} numbers")
    return tuple(int(count) for count in data)


def _fingerprint(data) -> dict | None:
    if data is None:
        return None
    high, low = str(data["hash"]).split(":")
    return {"rows": int(data["rows"]), "hash": f"{int(high)}:{int(low)}"}


def line_blocks(path: Path) -> Iterator[list[bytes]]:
    """The lines of a one-frame zstd file (a full's scratch file of a table's lines) in blocks of about ``CHUNK`` bytes.

    Raises :class:`StateDamaged` when the file is missing or is not one whole zstd frame
    whose content checksum holds.  (A bucket file, a frame per cell, is read as a :class:`BucketFile`.)
    """
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise StateDamaged(f"{path} is missing") from None
    with raw:
        yield from _split_lines(_checked_frame(raw, path))


def _checked_frame(raw, path: Path) -> Iterator[bytes]:
    """The decompressed bytes of ``raw``; at its end, proof that it held exactly one whole frame."""
    frame = zstandard.ZstdDecompressor().decompressobj()
    for chunk in iter(lambda: raw.read(CHUNK), b""):
        if frame.eof:
            raise StateDamaged(f"{path} has data after its zstd frame")
        try:
            data = frame.decompress(chunk)
        except zstandard.ZstdError as exc:
            raise StateDamaged(f"{path} is corrupt ({exc})") from None
        if data:
            yield data
    if not frame.eof or frame.unused_data:
        raise StateDamaged(f"{path} is truncated (its zstd frame ends early)" if not frame.eof else f"{path} has data after its zstd frame")


def _difference(found: FileChecksum, expected: FileChecksum) -> str:
    """How a whole zstd frame differs from what was recorded of it (a cut frame is reported as truncated before this)."""
    if found.bytes < expected.bytes:  # whole frames, but fewer: cut at a frame's end
        return f"is truncated ({found.bytes} bytes, {expected.bytes} recorded)"
    if found.bytes != expected.bytes:
        return f"was rewritten ({found.bytes} bytes, {expected.bytes} recorded)"
    return f"is corrupt: it does not match its checksum (sha256 {found.sha256[:12]}…, {expected.sha256[:12]}… recorded)"


def _file_damage(path: Path, expected: FileChecksum) -> str:
    """What is wrong with a bucket file whose checksum differs (one line, naming the file)."""
    data = path.read_bytes()
    return _data_damage(data, path, expected)


def _data_damage(data: bytes, path: Path, expected: FileChecksum) -> str:
    """What is wrong with a bucket file's bytes that are not what the listing records: decoded, so a cut one is called truncated."""
    try:
        decode_frames(data, path)
    except StateDamaged as exc:
        return str(exc)
    return f"{path} {_difference(FileChecksum(len(data), hashlib.sha256(data).hexdigest()), expected)}"


def encode_cells(lines: list[bytes], bucket: int) -> list[bytes]:
    """A bucket's sorted lines as its file's frames: one zstd frame (with its content checksum) per non-empty cell, ``b""``
    for an empty one — so a reader decodes the cells it needs, and a writer re-encodes only the cells that changed.

    One compressor a bucket: a full writes buckets from several threads, and a compressor is not to be shared.
    """
    compressor = _compressor()
    frames = [b""] * CELLS
    for cell, start, end in cell_spans(lines):
        if cell >> CELL_BITS != bucket:
            raise StateDamaged(f"a line of cell {cell:04x} among the lines of bucket {bucket:03x}")
        frames[cell & (CELLS - 1)] = compressor.compress(b"\n".join(lines[start:end]) + b"\n")
    return frames


def _compressor() -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=1, write_checksum=True)  # level 1: twice level 3's speed, for a few % more bytes


def decode_frames(data: bytes, path: Path) -> list[tuple[int, bytes]]:
    """Every zstd frame of a file's bytes, in order, as (its size, its content); :class:`StateDamaged` unless they are whole frames."""
    frames, at = [], 0
    decompressor = zstandard.ZstdDecompressor()
    while at < len(data):
        frame = decompressor.decompressobj()
        try:
            content = frame.decompress(data[at:])
        except zstandard.ZstdError as exc:
            raise StateDamaged(f"{path} is corrupt ({exc})") from None
        if not frame.eof:
            raise StateDamaged(f"{path} is truncated (its zstd frame ends early)")
        size = len(data) - at - len(frame.unused_data)
        frames.append((size, content))
        at += size
    return frames


_THREAD = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor: one context (a few hundred KiB once used), not one per bucket file kept in memory."""
    found = getattr(_THREAD, "decompressor", None)
    if found is None:
        found = _THREAD.decompressor = zstandard.ZstdDecompressor()
    return found


def _decode_frame(frame: bytes, path: Path, decompressor: zstandard.ZstdDecompressor) -> bytes:
    """The content of exactly one whole zstd frame (its content checksum checked by zstd)."""
    reader = decompressor.decompressobj()
    try:
        content = reader.decompress(frame)
    except zstandard.ZstdError as exc:
        raise StateDamaged(f"{path} is corrupt ({exc})") from None
    if not reader.eof:
        raise StateDamaged(f"{path} is truncated (its zstd frame ends early)")
    if reader.unused_data:
        raise StateDamaged(f"{path} has data after its zstd frame")
    return content


class BucketFile:
    """One bucket's file of a complete state, read once and proven by its listing's sha256: each cell's frame as stored,
    decoded only when asked for."""

    def __init__(self, path: Path, bucket: int, data: bytes, entry: FileChecksum) -> None:
        if entry.frames is None or entry.cells is None or sum(entry.frames) != len(data):
            raise StateDamaged(f"{path}: its listing records no frames that add up to its {len(data)} bytes")
        self.path, self.bucket, self.entry = path, bucket, entry
        offsets = itertools.accumulate(entry.frames, initial=0)
        self.frames = [data[start : start + size] for start, size in zip(offsets, entry.frames)]

    def lines(self, subs: Iterable[int] | None = None) -> list[bytes]:
        """The lines of the cells ``subs`` (cell numbers in the bucket; all when None), in order."""
        out: list[bytes] = []
        for sub in sorted(set(range(CELLS) if subs is None else subs)):
            if not self.frames[sub]:
                if self.entry.cells[sub]:
                    raise StateDamaged(f"{self.path}: cell {sub:x} has no frame but {self.entry.cells[sub]} rows listed")
                continue
            lines = _decode_frame(self.frames[sub], self.path, _decompressor()).split(b"\n")
            if lines.pop() != b"" or len(lines) != self.entry.cells[sub] or not lines \
                    or lines[0][:PREFIX] != lines[-1][:PREFIX] or lines[0][:PREFIX] != cell_label((self.bucket << CELL_BITS) | sub) + b"\t":
                raise StateDamaged(f"{self.path}: the frame of cell {sub:x} does not hold its {self.entry.cells[sub]} listed rows")
            out.extend(lines)
        return out


def text_blocks(reader) -> Iterator[list[bytes]]:
    """The lines of a plain file-like object, in blocks of about ``CHUNK`` bytes."""
    return _split_lines(iter(lambda: reader.read(CHUNK), b""))


def _split_lines(chunks: Iterable[bytes]) -> Iterator[list[bytes]]:
    pending = b""
    for chunk in chunks:
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


def bucket_runs(blocks: Iterable[list[bytes]]) -> Iterator[tuple[int, list[bytes]]]:
    """``(bucket, lines)`` of sorted, bucket-labelled lines, one run of a bucket's lines per block it spans.

    Runs are cut by bisection on the next bucket's label: no per-line work in Python.
    """
    for block in blocks:
        at = 0
        while at < len(block):
            bucket = _parse_label(block[at]) >> CELL_BITS
            end = len(block) if bucket >= (1 << MAX_BITS) - 1 else bisect.bisect_left(block, label(bucket + 1), at)
            yield bucket, block[at:end]
            at = end


def _parse_label(line: bytes) -> int:
    """The cell a line's label names."""
    head = line[:PREFIX]
    if len(head) != PREFIX or head[LABEL_HEX:] != b"\t":
        raise StateDamaged(f"a line does not start with its bucket and cell: {line[:80]!r}")
    try:
        cell = int(head[:LABEL_HEX], 16)
    except ValueError:
        cell = -1
    if cell < 0 or cell_label(cell) != head[:LABEL_HEX]:
        raise StateDamaged(f"a line does not start with its bucket and cell: {line[:80]!r}")
    return cell


def cell_spans(lines: list[bytes]) -> Iterator[tuple[int, int, int]]:
    """``(cell, start, end)`` of sorted, cell-labelled lines, found by bisection on the labels: no per-line work."""
    at = 0
    while at < len(lines):
        cell = _parse_label(lines[at])
        end = len(lines) if cell >= (1 << (MAX_BITS + CELL_BITS)) - 1 else bisect.bisect_left(lines, cell_label(cell + 1), at)
        yield cell, at, end
        at = end


def cell_runs(lines: list[bytes]) -> Iterator[tuple[int, int]]:
    """``(cell, lines in it)`` of sorted, cell-labelled lines."""
    for cell, start, end in cell_spans(lines):
        yield cell, end - start


def count_cells(lines: list[bytes], bucket: int, cells: list[int]) -> None:
    """Add the lines of ``bucket`` (sorted) to its per-cell counts; a line of another bucket is damage."""
    for cell, count in cell_runs(lines):
        if cell >> CELL_BITS != bucket:
            raise StateDamaged(f"a line of cell {cell:04x} among the lines of bucket {bucket:03x}")
        cells[cell & (CELLS - 1)] += count


class _BucketStream:
    """Sorted, bucket-labelled lines handed out one bucket at a time, buckets in increasing order, cut by bisection."""

    def __init__(self, blocks: Iterator[list[bytes]]) -> None:
        self._blocks = blocks
        self._block: list[bytes] = []
        self._at = 0

    def close(self) -> None:
        """Close the source (a generator holding a file open)."""
        close = getattr(self._blocks, "close", None)
        if close is not None:
            close()

    def _filled(self) -> bool:
        """Whether a line is left (the next block is fetched when this one is used up)."""
        while self._at >= len(self._block):
            block = next(self._blocks, None)
            if block is None:
                return False
            self._block, self._at = block, 0
        return True

    def take(self, bucket: int) -> list[bytes]:
        """The lines of ``bucket``; raises :class:`StateMismatch` if lines of an earlier bucket were left behind."""
        prefix, taken = label(bucket), []
        if self._filled() and self._block[self._at][:BUCKET_HEX] < prefix:
            raise StateMismatch(f"lines of bucket {self._block[self._at][:BUCKET_HEX]!r} were not merged")
        while self._filled() and self._block[self._at].startswith(prefix):
            end = len(self._block) if bucket >= (1 << MAX_BITS) - 1 else bisect.bisect_left(self._block, label(bucket + 1), self._at)
            taken.extend(self._block[self._at : end])
            self._at = end
        return taken

    def exhausted(self) -> bool:
        return not self._filled()


class TableFingerprintSums:
    """A table's (or a bucket's) fingerprint as Python integers, so it can be adjusted row by row."""

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

    def add_sums(self, other: TableFingerprintSums) -> None:
        self.rows += other.rows
        self.high += other.high
        self.low += other.low

    def to_dict(self) -> dict:
        """The same text ``table_fingerprint`` returns: numeric sums print as plain integers."""
        return {"rows": self.rows, "hash": f"{self.high}:{self.low}"}


class RowKeyState:
    """The row-key state of one backup: ``<root>/<backup id>/<table>+<bucket>.rows.zst``, then ``FORMAT``, ``CHECKSUMS.json``, ``COMPLETE``."""

    def __init__(self, root: Path, backup_id: str) -> None:
        self.dir = Path(root) / backup_id
        # Checksums known without reading the files again: taken while writing, or carried from a proven parent.
        self._known: dict[str, FileChecksum] = {}
        self._fingerprints: dict[str, dict] = {}  # by file name: the fingerprint of the lines written
        self._cells: dict[str, tuple[int, ...]] = {}  # by file name: its lines per cell
        self._tables: dict[str, dict] = {}  # by table: {"bits", "function", "fingerprint"}
        # By changed table, what an incremental read and wrote of it (TableChange.summary): the manifest's details["row_state"].
        self.work: dict[str, dict] = {}

    def exists(self) -> bool:
        return (self.dir / "COMPLETE").is_file()

    def current_format(self) -> bool:
        """False for a state written by an older version (one file per table, JSON keys, no checksums)."""
        return self._format() == FORMAT

    def _format(self) -> str | None:
        marker = self.dir / "FORMAT"
        return marker.read_text(errors="replace").strip() if marker.is_file() else None

    def path(self, table: str, bucket: int) -> Path:
        return self.dir / bucket_file_name(table, bucket)

    def bucket_paths(self, table: str) -> list[Path]:
        """The files of ``table``'s non-empty buckets in the complete state, in bucket order."""
        return [self.path(table, bucket) for bucket in sorted(self.table_listing(table).buckets)]

    def has_table(self, table: str) -> bool:
        """Whether the complete state lists ``table`` (a table without rows is listed, with no bucket files)."""
        return self.checksums().table(table) is not None

    def table_listing(self, table: str) -> TableListing:
        """What the complete state's listing records of ``table``: :class:`StateDamaged` if it is not listed."""
        listing = self.checksums().table(table)
        if listing is None:
            raise StateDamaged(f"{table} is not listed in {self.dir / CHECKSUMS}")
        return listing

    def recorded_fingerprint(self, table: str) -> dict:
        return self.table_listing(table).fingerprint

    def write_frames(self, table: str, bucket: int, frames: list[bytes]) -> None:
        """Write one bucket's file from its cells' frames (``b""`` for an empty cell); its checksum is taken as it is written."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(table, bucket)
        data = b"".join(frames)
        with open(path, "wb") as out:
            out.write(data)
        self._known[path.name] = FileChecksum(len(data), hashlib.sha256(data).hexdigest(), frames=tuple(len(f) for f in frames))

    def write_table(self, cur, table: TableInfo, bits: int | None = None) -> dict:
        """A full's pass over ``table``: every row's line into its bucket's file; returns the table's fingerprint.

        One ``COPY`` goes (in C) into one scratch zstd file; that file is then cut into
        bucket files by bisection on the bucket labels, summing each bucket's
        fingerprint on the way — the rows are rendered and hashed once.
        """
        if bits is None:
            cur.execute("SELECT c.reltuples::float8, pg_catalog.pg_relation_size(c.oid) FROM pg_catalog.pg_class c WHERE c.oid = %s",
                        (table.oid,))
            tuples, size = cur.fetchone()
            bits = bits_for(tuples if tuples >= 0 else size / 100)
        function = bucket_function(table)
        self.dir.mkdir(parents=True, exist_ok=True)
        scratch = self.dir / f"{file_name(table.qualified)}.all.partial"
        blocks = line_blocks(scratch)
        try:
            raw = open(scratch, "wb")
            with _OwningWriter(raw, zstandard.ZstdCompressor(level=1).stream_writer(raw, closefd=False)) as out:
                cur.copy_expert(rows_query(table, bits, function=function).as_string(cur), out)
            return self.write_buckets(table.qualified, bits, checked_order(blocks, f"rows of {table.qualified}"), function)
        finally:
            blocks.close()  # a failure must not leave the file open (a full disk must be emptied, and unmounted)
            scratch.unlink(missing_ok=True)

    def write_buckets(self, table: str, bits: int, blocks: Iterable[list[bytes]], function: str = "md5") -> dict:
        """Write sorted, cell-labelled lines into their buckets' files; record and return the table's fingerprint.

        Each bucket's file is written as its lines arrive, a frame per cell: memory is a
        block of lines, however many rows a bucket holds (a table's statistics may be stale).
        """
        total, writer = TableFingerprintSums(), None
        try:
            for bucket, lines in bucket_runs(blocks):
                if bucket >> bits:
                    raise StateMismatch(f"{table}: a line of bucket {bucket} in a table of {1 << bits} buckets")
                if writer is not None and writer.bucket != bucket:
                    total.add_sums(writer.close())
                    writer = None
                if writer is None:
                    writer = _BucketWriter(self, table, bucket)
                writer.add(lines)
            if writer is not None:
                total.add_sums(writer.close())
                writer = None
        finally:
            if writer is not None:  # a failure: the file is left to the capture's cleanup, closed
                writer.abort()
        self.record_table(table, bits, total.to_dict(), function)
        return total.to_dict()

    def record_table(self, table: str, bits: int, fingerprint: dict, function: str) -> None:
        self._tables[table] = {"bits": bits, "function": function, "fingerprint": dict(fingerprint)}

    def record_bucket(self, table: str, bucket: int, fingerprint: dict, cells: list[int] | tuple[int, ...]) -> None:
        if sum(cells) != fingerprint["rows"] or len(cells) != CELLS:
            raise StateMismatch(f"{table}: bucket {bucket}'s cells hold {sum(cells)} rows, its fingerprint {fingerprint['rows']}")
        name = self.path(table, bucket).name
        self._fingerprints[name] = dict(fingerprint)
        self._cells[name] = tuple(cells)

    def forget(self, table: str, bucket: int) -> None:
        """Drop a bucket's file written by this object (a bucket that lost every row has none)."""
        path = self.path(table, bucket)
        path.unlink(missing_ok=True)
        self._known.pop(path.name, None)
        self._fingerprints.pop(path.name, None)
        self._cells.pop(path.name, None)

    def carry_bucket(self, parent: RowKeyState, table: str, bucket: int) -> None:
        """An unchanged bucket's file is the parent's: a hard link (or a copy), with the checksum its listing records.

        The parent must have been proven (:meth:`damage` is None) first: what is carried is
        its recorded checksum, so a file damaged later is still found when it is next read.
        """
        source, dest = parent.path(table, bucket), self.path(table, bucket)
        expected = parent.checksums().files.get(source.name)
        if expected is None:
            raise StateDamaged(f"{source} is not listed in {parent.dir / CHECKSUMS}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, dest)
        except OSError:
            shutil.copyfile(source, dest)
        self._known[dest.name] = expected
        if expected.fingerprint:
            self._fingerprints[dest.name] = expected.fingerprint
        if expected.cells is not None:
            self._cells[dest.name] = expected.cells

    def carry(self, parent: RowKeyState, table: str) -> None:
        """An unchanged table: every bucket carried, its bits and fingerprint as the parent records them."""
        listing = parent.table_listing(table)
        for bucket in listing.buckets:
            self.carry_bucket(parent, table, bucket)
        self.record_table(table, listing.bits, listing.fingerprint, listing.function)

    def bucket_file(self, table: str, bucket: int) -> BucketFile | None:
        """One bucket's file of a complete state, proven by the checksum its listing records (None if the bucket is empty).

        Its order was checked when it was written; the sha256 ties it to the listing, so a
        file truncated, changed or missing is :class:`StateDamaged` before any of it is used.
        """
        expected = self.table_listing(table).buckets.get(bucket)
        if expected is None:
            return None
        path = self.path(table, bucket)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StateDamaged(f"{path} is missing") from None
        if not FileChecksum(len(data), hashlib.sha256(data).hexdigest()).same_file(expected):
            raise StateDamaged(_data_damage(data, path, expected))
        return BucketFile(path, bucket, data, expected)

    def blocks(self, table: str) -> Iterator[list[bytes]]:
        """Every line of ``table``, a block per bucket (a complete state's files, each proven by its checksum)."""
        for bucket in sorted(self.table_listing(table).buckets):
            bucket_file = self.bucket_file(table, bucket)
            assert bucket_file is not None
            yield bucket_file.lines()

    def checksums(self) -> StateChecksums:
        """``CHECKSUMS.json``; :class:`StateDamaged` when it is missing or unreadable.

        Parsed once per object and file version (a capture reads it for every table it merges).
        """
        path = self.dir / CHECKSUMS
        try:
            stamp = path.stat()
            stamp = (stamp.st_mtime_ns, stamp.st_size, stamp.st_ino)
            cached = getattr(self, "_listing", None)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            listing = StateChecksums.parse(path.read_text())
            self._listing = (stamp, listing)
            return listing
        except FileNotFoundError:
            raise StateDamaged(f"its checksum file {path} is missing") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateDamaged(f"its checksum file {path} is unreadable ({type(exc).__name__}: {exc})") from None

    def damage(self) -> str | None:
        """None when the state is complete, of this format and every file is as recorded; else one line saying what is wrong.

        The line reads after "the row-key state of <backup>": it names the table and the
        file, and whether the file is missing, truncated or changed.  Every file is read
        whole (its sha256), so an unchanged bucket's file is proven before an incremental
        links it into its own state; each table's buckets must add up to its fingerprint.
        """
        if not self.dir.is_dir():
            return f"is not on this machine ({self.dir})"
        if not self.exists():
            return f"is incomplete: {self.dir} has no COMPLETE marker (its capture did not finish)"
        found = self._format()
        if found != FORMAT:
            return f"is of an older format ({found or 'no FORMAT file'}; this version reads {FORMAT})"
        try:
            listing = self.checksums()
        except StateDamaged as exc:
            return f"is damaged: {exc}"
        if listing.format != FORMAT:
            return f"is damaged: {self.dir / CHECKSUMS} records format {listing.format!r}, its FORMAT file {FORMAT!r}"
        for name, expected in sorted(listing.files.items()):
            path = self.dir / name
            if not path.is_file():
                return f"lacks {table_of(name)}: {path} is missing"
            if not FileChecksum.of(path).same_file(expected):
                return f"is damaged: the file of {table_of(name)}: {_file_damage(path, expected)}"
        stray = sorted(p.name for p in self.dir.glob(f"*{SUFFIX}") if p.name not in listing.files)
        if stray:  # never carried into the next state as if it were proven
            return f"is damaged: {self.dir / stray[0]} is not listed in its checksum file"
        for name in listing.files:
            if table_of(name) not in listing.tables:
                return f"is damaged: {self.dir / name} is of {table_of(name)}, which its checksum file does not list"
        for table in sorted(listing.tables):
            if problem := _listing_problem(listing.table(table)):
                return f"is damaged: {table} in {self.dir / CHECKSUMS}: {problem}"
        return None

    def mark_complete(self) -> None:
        """Record the format, every file's checksum and every table's bits and fingerprint, then ``COMPLETE``.

        A state without keyed tables is complete too (an empty listing): its folder is
        created here.  Files neither written nor carried by this object are hashed and
        summed here; a table it did not record keeps the bits an earlier listing gave it, and
        the sum of its buckets as its fingerprint (a file without a table's bits is left unlisted
        as a table, which :meth:`damage` reports).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        earlier = None
        if (self.dir / CHECKSUMS).is_file():
            try:
                earlier = self.checksums()
            except StateDamaged:
                earlier = None
        files = {}
        for path in sorted(self.dir.glob(f"*{SUFFIX}")):
            checksum = self._known.get(path.name)
            fingerprint, cells = self._fingerprints.get(path.name), self._cells.get(path.name)
            if checksum is None or checksum.frames is None or fingerprint is None or cells is None:
                checksum, fingerprint, cells = _read_unlisted(path)
            files[path.name] = FileChecksum(checksum.bytes, checksum.sha256, fingerprint, cells, checksum.frames)
        tables = {}
        for name in sorted({table_of(file) for file in files} | set(self._tables)):
            if name in self._tables:
                tables[name] = self._tables[name]
            elif earlier is not None and name in earlier.tables:  # re-marked: the bits it had, the sum of its buckets now
                total = TableFingerprintSums()
                for file, checksum in files.items():
                    if table_of(file) == name:
                        total.add_sums(TableFingerprintSums.parse(checksum.fingerprint))
                tables[name] = {**earlier.tables[name], "fingerprint": total.to_dict()}
        if earlier is not None:  # tables without rows (no files) keep their entry
            tables.update({name: entry for name, entry in earlier.tables.items() if name not in tables})
        (self.dir / "FORMAT").write_text(FORMAT + "\n")
        write_replacing(self.dir / CHECKSUMS, StateChecksums(FORMAT, files, tables).to_json().encode())
        (self.dir / "COMPLETE").write_text(datetime.now(timezone.utc).isoformat())


def _read_unlisted(path: Path) -> tuple[FileChecksum, dict, tuple[int, ...]]:
    """A bucket file this object neither wrote nor carried, read whole: its checksum and frames, its fingerprint and cells.

    Its lines must be in order and each frame must hold one cell's lines, cells in order:
    else :class:`StateOrderError` or :class:`StateDamaged`.
    """
    data = path.read_bytes()
    frames = decode_frames(data, path)
    bucket = split_name(path.name)[1]
    sums, cells, sizes = TableFingerprintSums(), [0] * CELLS, [0] * CELLS
    blocks = checked_order((_frame_lines(content, path) for _, content in frames), f"row-key state {path}")
    for (size, _), block in zip(frames, blocks):
        spans = list(cell_spans(block))
        if len(spans) != 1 or spans[0][0] >> CELL_BITS != bucket:
            raise StateDamaged(f"{path}: a frame holds lines of {len(spans)} cells, not of one cell of bucket {bucket:03x}")
        sub = spans[0][0] & (CELLS - 1)
        sums.add(block)
        cells[sub], sizes[sub] = len(block), size
    checksum = FileChecksum(len(data), hashlib.sha256(data).hexdigest(), frames=tuple(sizes))
    return checksum, sums.to_dict(), tuple(cells)


def _frame_lines(content: bytes, path: Path) -> list[bytes]:
    """A frame's lines, each ended by a newline, none empty (as :class:`BucketFile` reads them)."""
    lines = content.split(b"\n")
    if lines.pop() != b"" or not all(lines):
        raise StateDamaged(f"{path}: a frame's lines are not each one line ended by a newline")
    return lines


def _listing_problem(table: TableListing) -> str | None:
    """Why a table's listing does not add up (buckets out of range, fingerprints that do not sum), or None."""
    if not 0 <= table.bits <= MAX_BITS:
        return f"{table.bits} bucket bits"
    if table.function not in ("int", "md5"):
        return f"an unknown bucket function {table.function!r}"
    total = TableFingerprintSums()
    for bucket, checksum in table.buckets.items():
        if bucket >> table.bits:
            return f"bucket {bucket} in a table of {1 << table.bits} buckets"
        if not checksum.fingerprint or checksum.fingerprint["rows"] <= 0:
            return f"bucket {bucket} records no rows"
        if checksum.cells is None or len(checksum.cells) != CELLS or min(checksum.cells) < 0 \
                or sum(checksum.cells) != checksum.fingerprint["rows"]:
            return f"bucket {bucket}'s cells {checksum.cells} do not add up to its {checksum.fingerprint['rows']} rows"
        if checksum.frames is None or sum(checksum.frames) != checksum.bytes \
                or any((size > 0) != (rows > 0) or size < 0 for size, rows in zip(checksum.frames, checksum.cells)):
            return f"bucket {bucket}'s frames {checksum.frames} are not one per non-empty cell in its {checksum.bytes} bytes"
        total.add_sums(TableFingerprintSums.parse(checksum.fingerprint))
    if total.to_dict() != table.fingerprint:
        return f"its buckets sum to {total.to_dict()}, the table records {table.fingerprint}"
    return None


@dataclass
class TableChange:
    """What an incremental found in one table, and what it cost: the test's and the log's view of the bucket selection."""

    changed: int = 0  # changed rows (updates, inserts, re-sends)
    updated: int = 0  # of them, keys the parent held
    deleted: int = 0
    fingerprint: dict = field(default_factory=dict)
    buckets: int = 0  # the table's bucket count
    rewritten: int = 0  # bucket files written anew
    compared: int = 0  # buckets some of whose current keys were read
    cells_compared: int = 0  # cells whose current keys were read (CELLS a bucket)
    cells_rewritten: int = 0  # cells decoded, merged and encoded again (a rewritten bucket's other cells are copied as bytes)
    keys_read: int = 0  # current keys read from the server
    counted: bool = False  # whether the per-cell counts were taken

    @property
    def unchanged(self) -> bool:
        return not self.changed and not self.deleted

    def summary(self) -> dict:
        """Buckets of the table, bucket files written anew, buckets and cells compared with the current keys, keys read for that."""
        return {"buckets": self.buckets, "rewritten": self.rewritten, "cells_rewritten": self.cells_rewritten,
                "compared": self.compared, "cells_compared": self.cells_compared, "keys_read": self.keys_read}


class ServerTable:
    """What an incremental reads of one table now, from the server, in the snapshot: the changed rows, counts, current keys.

    One pass counts the table's rows and its changed ones; only when some changed are
    they read, once, with their columns, into ``tmp`` (they are walked three times:
    counted per cell, merged, then written as the upserts) — an unchanged table costs
    one scan.  The current keys are read only of the cells asked for.
    """

    def __init__(self, cur, table: TableInfo, bits: int, function: str, changed_rows: sql.Composable, tmp: Path) -> None:
        self.cur, self.table, self.bits, self.function, self.tmp = cur, table, bits, function, tmp
        self.name = table.qualified
        self._changed_path = tmp / f"{file_name(self.name)}.changed"
        cur.execute(sql.SQL("SELECT count(*), count(*) FILTER (WHERE {}) FROM ONLY {} AS t").format(changed_rows, table.ident))
        self._count, counted_changed = cur.fetchone()
        with open(self._changed_path, "wb") as out:
            if counted_changed:
                cur.copy_expert(rows_query(table, bits, changed_rows, function, with_rows=True).as_string(cur), out)
        self.changed = cur.rowcount if counted_changed else 0
        if self.changed != counted_changed:  # one snapshot: the same rows both times
            raise StateMismatch(f"{self.name}: {counted_changed} changed rows counted, {self.changed} read")

    def _changed_lines(self) -> Iterator[list[tuple[bytes, bytes]]]:
        with open(self._changed_path, "rb") as raw:
            for block in text_blocks(raw):
                yield [split_changed_line(line) for line in block]

    def changed_blocks(self) -> Iterator[list[bytes]]:
        """The changed rows' state lines, checked in state order."""
        return checked_order(([state for state, _ in block] for block in self._changed_lines()), f"changed rows of {self.name}")

    def changed_rows(self) -> Iterator[list[bytes]]:
        """The changed rows as ``COPY`` of the table prints them (in state order): the incremental's upserts."""
        for block in self._changed_lines():
            yield [row for _, row in block]

    def count(self) -> int:
        return self._count

    def cell_counts(self) -> dict[int, int]:
        self.cur.execute(cell_counts_query(self.table, self.bits, self.function))
        return dict(self.cur.fetchall())

    def key_blocks(self, cells: Iterable[int]) -> Iterator[list[bytes]]:
        path = self.tmp / f"{file_name(self.name)}.keys"
        with open(path, "wb") as out:
            self.cur.copy_expert(keys_query(self.table, self.bits, cells, self.function).as_string(self.cur), out)
        with open(path, "rb") as raw:
            yield from checked_order(text_blocks(raw), f"current keys of {self.name}")


def capture_change(cur, table: TableInfo, parent: RowKeyState, state: RowKeyState, changed_rows: sql.Composable,
                   parent_fingerprint: dict, tmp: Path, on_deleted: Callable[[list[bytes]], None],
                   on_changed: Callable[[Iterator[list[bytes]]], None] | None = None) -> TableChange:
    """Carry ``table``'s state from ``parent`` into ``state`` through the rows changed since it; report the deletes.

    ``changed_rows`` is the SQL condition of rows changed since the parent (alias ``t``);
    ``on_deleted`` gets deleted keys as COPY prints them, in order, bucket by bucket;
    ``on_changed``, after the merge and only when a row changed, the changed rows'
    blocks as COPY of the table prints them — read in the same scan as their state lines.
    """
    listing = parent.table_listing(table.qualified)
    if listing.function != bucket_function(table):
        raise StateMismatch(f"{table.qualified}: the parent's buckets are by {listing.function!r}, its key is put in buckets by "
                            f"{bucket_function(table)!r}")
    source = ServerTable(cur, table, listing.bits, listing.function, changed_rows, tmp)
    change = merge_change(source, parent, state, table.qualified, parent_fingerprint, on_deleted)
    if on_changed is not None and change.changed:
        on_changed(source.changed_rows())
    return change


def merge_change(source, parent: RowKeyState, state: RowKeyState, name: str, parent_fingerprint: dict,
                 on_deleted: Callable[[list[bytes]], None]) -> TableChange:
    """The incremental's work on one table, given what ``source`` (a :class:`ServerTable`, or a test's model) reads now.

    The count algebra (module docstring), cell by cell, decides what is read: only the
    buckets with changed rows or deletes are merged, and only the cells whose counts
    prove deletes are compared with the table's current keys.  Anything that does not
    add up is a :class:`StateMismatch`.
    """
    listing = parent.table_listing(name)
    if listing.fingerprint != parent_fingerprint:
        raise StateMismatch(f"{name}: the parent's row-key state records {listing.fingerprint}, its manifest {parent_fingerprint}")
    bits = listing.bits
    result = TableChange(buckets=1 << bits, changed=source.changed)
    current = source.count()
    if bits < MAX_BITS and current > OUTGROWN_ROWS_PER_BUCKET << bits:
        raise StateOutgrown(f"{name} has {current} rows in the {1 << bits} buckets its full chose, over "
                            f"{OUTGROWN_ROWS_PER_BUCKET} a bucket: a full cuts it into more")
    read = _ReadBuckets(parent, name)  # the buckets the first pass read, kept for the merge (within a budget)
    changes = changes_by_cell(read, name, listing, source.changed_blocks())
    if sum(c for c, _ in changes.values()) != result.changed:
        raise StateMismatch(f"{name}: {result.changed} changed rows read, {sum(c for c, _ in changes.values())} in their cells")
    result.updated = sum(u for _, u in changes.values())
    gone = listing.fingerprint["rows"] - current + result.changed - result.updated
    if gone < 0:
        raise StateMismatch(f"{name}: {current} rows now, {listing.fingerprint['rows']} at the parent, {result.changed} changed of "
                            f"which {result.updated} were in the parent: more rows than the parent's and the changed ones")
    if not result.changed and not gone:
        state.carry(parent, name)
        result.fingerprint = dict(parent_fingerprint)
        return result
    gone_by_cell: dict[int, int] = {}
    now: dict[int, int] | None = None
    if gone:  # only then are the cells counted: with no row gone overall, none is gone from any cell
        result.counted = True
        now = source.cell_counts()
        gone_by_cell = deleted_by_cell(name, listing, changes, now, current)
        if sum(gone_by_cell.values()) != gone:
            raise StateMismatch(f"{name}: the table's counts say {gone} rows were deleted, its cells' {sum(gone_by_cell.values())}")
    compared: dict[int, set[bytes]] = {}  # by bucket: the labels of its cells that lost rows
    for cell in gone_by_cell:
        compared.setdefault(cell >> CELL_BITS, set()).add(cell_label(cell))
    keys = None
    if gone_by_cell:
        result.compared, result.cells_compared = len(compared), len(gone_by_cell)
        keys = _BucketStream(_counting(source.key_blocks(sorted(gone_by_cell)), result))
    changed_buckets = {cell >> CELL_BITS for cell in changes}
    changed_stream = _BucketStream(source.changed_blocks())
    total = TableFingerprintSums()
    try:
        for bucket in sorted(set(listing.buckets) | changed_buckets | set(compared)):
            if bucket not in changed_buckets and bucket not in compared:
                state.carry_bucket(parent, name, bucket)
                total.add_sums(TableFingerprintSums.parse(listing.buckets[bucket].fingerprint))
                continue
            lost = sum(gone_by_cell.get((bucket << CELL_BITS) | sub, 0) for sub in range(CELLS))
            expected = [now.get((bucket << CELL_BITS) | sub, 0) for sub in range(CELLS)] if now is not None else None
            total.add_sums(_merge_bucket(read, state, name, bucket, listing, changed_stream.take(bucket),
                                         keys.take(bucket) if keys is not None and bucket in compared else None,
                                         compared.get(bucket, set()), lost, expected, on_deleted, result))
        if not changed_stream.exhausted() or (keys is not None and not keys.exhausted()):
            raise StateMismatch(f"{name}: changed rows or current keys of a bucket were left unmerged")
    finally:
        changed_stream.close()
        if keys is not None:
            keys.close()
    if result.deleted != gone or total.rows != current:
        raise StateMismatch(f"{name}: the counts say {gone} rows were deleted and {current} remain; "
                            f"merging the keys found {result.deleted} deleted and {total.rows} remaining")
    result.fingerprint = total.to_dict()
    state.record_table(name, bits, result.fingerprint, listing.function)
    state.work[name] = result.summary()
    return result


def _counting(blocks: Iterator[list[bytes]], result: TableChange) -> Iterator[list[bytes]]:
    try:
        for block in blocks:
            result.keys_read += len(block)
            yield block
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()


def changes_by_cell(parent: _ReadBuckets, name: str, listing: TableListing, changed_blocks: Iterable[list[bytes]]) -> dict[int, tuple[int, int]]:
    """Per cell with changed rows: ``(c, u)``, the changed rows and how many of their keys the parent held.

    Only the parent's cells that have changed rows are read (decoded from their frames).
    """
    changes: dict[int, tuple[int, int]] = {}
    for bucket, runs in itertools.groupby(bucket_runs(changed_blocks), key=operator.itemgetter(0)):
        if bucket >> listing.bits:
            raise StateMismatch(f"{name}: a changed row in bucket {bucket} of a table of {1 << listing.bits} buckets")
        lines = [line for _, run in runs for line in run]  # one bucket's changed rows: few, and walked twice
        counts = list(cell_runs(lines))
        updated: dict[bytes, int] = {}
        parent_file = parent.get(bucket)
        if parent_file is not None:
            count_updated([parent_file.lines(cell & (CELLS - 1) for cell, _ in counts)], iter(lines), updated)
        for cell, count in counts:
            changes[cell] = (count, updated.get(cell_label(cell), 0))
    return changes


def deleted_by_cell(name: str, listing: TableListing, changes: dict[int, tuple[int, int]], now: dict[int, int],
                    current: int) -> dict[int, int]:
    """Per cell, how many parent rows are gone, ``g = p − n + c − u``; only cells with ``g > 0``.

    ``now`` is each cell's current row count (``GROUP BY``), ``current`` the table's
    (``count(*)``).  Rows not changed since the parent were all in the parent, so a
    cell holds its parent rows less the deleted, plus its changed rows that are new:
    ``n = p − g + (c − u)``.  A negative ``g``, or counts that do not sum to the table's,
    mean the state and the source do not add up.
    """
    if sum(now.values()) != current:
        raise StateMismatch(f"{name}: its cells hold {sum(now.values())} rows, the table {current}")
    parent_cells = {(bucket << CELL_BITS) | sub: count for bucket, entry in listing.buckets.items() if entry.cells
                    for sub, count in enumerate(entry.cells) if count}
    gone = {}
    for cell in sorted(set(parent_cells) | set(now) | set(changes)):
        if cell >> (listing.bits + CELL_BITS):
            raise StateMismatch(f"{name}: the server counted rows in cell {cell} of a table of {1 << listing.bits} buckets")
        changed, updated = changes.get(cell, (0, 0))
        lost = parent_cells.get(cell, 0) - now.get(cell, 0) + changed - updated
        if lost < 0:
            raise StateMismatch(f"{name}: cell {cell:04x} holds {now.get(cell, 0)} rows, more than its "
                                f"{parent_cells.get(cell, 0)} at the parent and {changed - updated} new ones")
        if lost:
            gone[cell] = lost
    return gone


def _merge_bucket(read: _ReadBuckets, state: RowKeyState, name: str, bucket: int, listing: TableListing, changed_lines: list[bytes],
                  keys: list[bytes] | None, compared: set[bytes], gone: int, expected: list[int] | None, on_deleted,
                  result: TableChange) -> TableFingerprintSums:
    """Merge one bucket's parent lines with its changed rows (and, in its cells that lost rows, its current keys) into a new file.

    Only the cells with changed rows or deletes are decoded, merged and encoded again;
    the other cells' frames are copied from the parent's file as they are.  The bucket is
    held in memory (its file, its touched cells' lines and their merge): at most
    ``OUTGROWN_ROWS_PER_BUCKET`` rows, as :func:`merge_change` promotes a table that grew
    past it (at ``MAX_BITS``, a table's rows / 4096).  ``expected``,
    when the cells were counted, is each cell's row count now: the new file must hold exactly that.
    """
    entry = listing.buckets.get(bucket)
    sums = TableFingerprintSums.parse(entry.fingerprint) if entry is not None else TableFingerprintSums()
    touched = {cell & (CELLS - 1) for cell, _ in cell_runs(changed_lines)} | {int(cell, 16) & (CELLS - 1) for cell in compared}
    parent_file = read.take(bucket)
    frames = list(parent_file.frames) if parent_file is not None else [b""] * CELLS
    cells = list(entry.cells) if entry is not None and entry.cells is not None else [0] * CELLS
    parent_lines = parent_file.lines(touched) if parent_file is not None else []
    merged, new_cells = _LineSink(), [0] * CELLS
    deleted = merge_state([parent_lines], iter(changed_lines), [keys] if keys is not None else None, merged, sums,
                          lambda gone_keys: on_deleted([key[PREFIX:] for key in gone_keys]),
                          compared=compared, cells=(bucket, new_cells))
    if deleted != gone:
        raise StateMismatch(f"{name}: bucket {bucket}'s counts say {gone} rows were deleted, its keys {deleted}")
    encoded = encode_cells(merged.lines(), bucket)
    for sub in touched:
        frames[sub], cells[sub] = encoded[sub], new_cells[sub]
    if expected is not None and cells != expected:
        raise StateMismatch(f"{name}: bucket {bucket} holds {cells} rows per cell after the merge, the table {expected}")
    if sum(cells) != sums.rows:
        raise StateMismatch(f"{name}: bucket {bucket}'s cells hold {sum(cells)} rows after the merge, its fingerprint {sums.rows}")
    result.deleted += deleted
    result.rewritten += 1
    result.cells_rewritten += len(touched)
    if sums.rows:
        state.write_frames(name, bucket, frames)
        state.record_bucket(name, bucket, sums.to_dict(), cells)
    else:  # every row of the bucket is gone: no file, as a full would write none
        state.forget(name, bucket)
    return sums


# The compressed bytes of parent bucket files an incremental keeps between its two passes over a table (the count of
# updates, then the merge), so most buckets are read and checked once: a bound, so memory does not grow with the state.
READ_BUCKETS_BUDGET = 32 << 20


class _ReadBuckets:
    """The parent's bucket files of one table as an incremental reads them: each proven when read, the first pass's
    kept for the second up to ``READ_BUCKETS_BUDGET`` bytes (then read again)."""

    def __init__(self, parent: RowKeyState, table: str) -> None:
        self.parent, self.table, self.budget = parent, table, READ_BUCKETS_BUDGET
        self._kept: dict[int, BucketFile | None] = {}

    def get(self, bucket: int) -> BucketFile | None:
        """The bucket's file (None if the bucket is empty), kept for :meth:`take` while the budget allows."""
        found = self.parent.bucket_file(self.table, bucket)
        if found is None:
            self._kept[bucket] = None
        elif found.entry.bytes <= self.budget:
            self._kept[bucket] = found
            self.budget -= found.entry.bytes
        return found

    def take(self, bucket: int) -> BucketFile | None:
        """The bucket's file, the kept one if :meth:`get` kept it (and no longer kept), else read now."""
        if bucket not in self._kept:
            return self.parent.bucket_file(self.table, bucket)
        kept = self._kept.pop(bucket)
        if kept is not None:
            self.budget += kept.entry.bytes
        return kept


class _BucketWriter:
    """One bucket's file written as its sorted lines arrive: a zstd frame per cell, ended when the next cell's lines
    come; its sha256, frame sizes, fingerprint and cells recorded in the state on :meth:`close`."""

    def __init__(self, state: RowKeyState, table: str, bucket: int) -> None:
        self.state, self.table, self.bucket = state, table, bucket
        state.dir.mkdir(parents=True, exist_ok=True)
        self.path = state.path(table, bucket)
        self._raw = open(self.path, "wb")
        self._digest, self._size = hashlib.sha256(), 0
        self._compressor = _compressor()
        self._frame: zstandard.ZstdCompressionObj | None = None
        self._sub, self._frame_start = -1, 0
        self.frames, self.cells, self.sums = [0] * CELLS, [0] * CELLS, TableFingerprintSums()

    def add(self, lines: list[bytes]) -> None:
        """Sorted lines of this bucket, after the ones added before."""
        for cell, start, end in cell_spans(lines):
            if cell >> CELL_BITS != self.bucket:
                raise StateDamaged(f"a line of cell {cell:04x} among the lines of bucket {self.bucket:03x}")
            sub = cell & (CELLS - 1)
            if sub != self._sub:
                if sub < self._sub:
                    raise StateOrderError(f"cell {cell:04x} after cell {(self.bucket << CELL_BITS) | self._sub:04x}")
                self._end_frame()
                self._sub, self._frame, self._frame_start = sub, self._compressor.compressobj(), self._size
            assert self._frame is not None
            self._write(self._frame.compress(b"\n".join(lines[start:end]) + b"\n"))
            self.cells[sub] += end - start
        self.sums.add(lines)

    def close(self) -> TableFingerprintSums:
        self._end_frame()
        self._raw.close()
        self.state._known[self.path.name] = FileChecksum(self._size, self._digest.hexdigest(), frames=tuple(self.frames))
        self.state.record_bucket(self.table, self.bucket, self.sums.to_dict(), self.cells)
        return self.sums

    def abort(self) -> None:
        self._raw.close()

    def _end_frame(self) -> None:
        if self._frame is not None:
            self._write(self._frame.flush())
            self.frames[self._sub] = self._size - self._frame_start
            self._frame = None

    def _write(self, data: bytes) -> None:
        if data:
            self._raw.write(data)
            self._digest.update(data)
            self._size += len(data)


class _LineSink:
    """Where :func:`merge_state` writes the merged lines of the cells it was given: kept in memory (one bucket's, at most)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(data)
        return len(data)

    def lines(self) -> list[bytes]:
        return b"".join(self._parts).split(b"\n")[:-1]


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

    Plain names (letters, digits, ``_.-``) stay as they are; ``+`` is always quoted, so it can part name and bucket.
    """
    quoted = urllib.parse.quote(table, safe="_.-")
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted


def bucket_file_name(table: str, bucket: int) -> str:
    """``<table>+<bucket label>.rows.zst``."""
    return f"{file_name(table)}+{label(bucket).decode()}{SUFFIX}"


def split_name(name: str) -> tuple[str, int]:
    """The table and bucket a state file name is of: the inverse of :func:`bucket_file_name`."""
    stem, plus, bucket = name.removesuffix(SUFFIX).rpartition("+")
    if not plus or len(bucket) != BUCKET_HEX or label(int(bucket, 16)).decode() != bucket:
        raise ValueError(f"{name} is not a bucket file name")
    return urllib.parse.unquote(stem), int(bucket, 16)


def table_of(name: str) -> str:
    """The table a state file name is of (the name itself when it is no bucket file's)."""
    try:
        return split_name(name)[0]
    except ValueError:
        return name


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
    remaining lines start the next window.  Memory follows the window, not the change
    (an incremental hands it one bucket's lines at a time: see :func:`_merge_bucket`).
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


def count_updated(parent_blocks: Iterable[list[bytes]], changed_lines: Iterator[bytes], by_cell: dict[bytes, int] | None = None) -> int:
    """How many changed rows' keys were in the parent (updates, not inserts); ``by_cell`` gets them per cell label."""
    updated = 0
    for block, changed, _ in _windows(parent_blocks, changed_lines, None):
        for line in changed:  # few per block: look each up, rather than take every parent line's key
            probe = line[: -HASH_HEX]  # the key and its tab (COPY prints tabs in keys as \\t): only that key starts so
            at = bisect.bisect_left(block, probe)
            if at < len(block) and block[at].startswith(probe):
                updated += 1
                if by_cell is not None:
                    by_cell[line[:LABEL_HEX]] = by_cell.get(line[:LABEL_HEX], 0) + 1
    return updated


def merge_state(parent_blocks: Iterable[list[bytes]], changed_lines: Iterator[bytes], current_keys: Iterable[list[bytes]] | None,
                out, sums: TableFingerprintSums, on_deleted, parent_seen: TableFingerprintSums | None = None, *,
                compared: set[bytes] | None = None, cells: tuple[int, list[int]] | None = None) -> int:
    """Write the new state — parent lines minus deleted and updated keys, plus the changed lines — into ``out``.

    ``sums`` (the parent's fingerprint) is adjusted to the new rows; ``on_deleted`` gets
    each window's deleted keys.  Without ``current_keys`` the caller has proved there
    were no deletes.  With them — the current keys of the cells whose labels are in
    ``compared`` (all cells when it is None) — every current key must be a parent key or
    a changed row of those cells and every changed row of them a current key, else
    :class:`StateMismatch`; the other cells' parent lines are proved kept by their counts.
    Returns the number of deleted keys; ``parent_seen``, if given, gets the fingerprint
    of the parent's lines, for a caller that must check them against the parent's
    manifest (one whose state does not record it); ``cells``, ``(bucket, counts)``, gets
    the lines written per cell of that bucket.
    """
    deleted_total = 0

    def write(lines: list[bytes]) -> None:
        out.write(b"\n".join(lines) + b"\n")
        if cells is not None:
            count_cells(lines, cells[0], cells[1])

    def in_compared(lines: list[bytes]) -> list[bytes]:
        if compared is None:
            return lines
        kept: list[bytes] = []
        for cell, start, end in cell_spans(lines):  # sorted lines: each cell's are one run
            if cell_label(cell) in compared:
                kept.extend(lines[start:end])
        return kept

    for block, changed, current in _windows(parent_blocks, changed_lines, current_keys):
        if parent_seen is not None:
            parent_seen.add(block)
        if current is None and not changed:
            if block:
                write(block)
            continue
        changed_keys = keys_of(changed)
        deleted: set[bytes] = set()
        if current is None:
            remove = set(changed_keys)
        else:
            parent_set, changed_set, current_set = set(keys_of(in_compared(block))), set(keys_of(in_compared(changed))), set(current)
            if len(current_set) != len(current):
                raise StateMismatch("the current keys repeat a key")
            if compared is not None and any(cell_label(cell) not in compared for cell, _, _ in cell_spans(current)):
                raise StateMismatch("a current key of a cell that was not asked for")
            if not changed_set <= current_set or not current_set <= parent_set | changed_set:
                raise StateMismatch("current keys, changed rows and the parent's keys do not add up")
            deleted = parent_set - current_set
            remove = set(changed_keys) | deleted
        # Few keys leave a block: find each by bisection, and keep the runs between them as slices.
        at = sorted(i for i in (_index_of(block, key) for key in remove) if i is not None)
        if at:
            sums.add([block[i] for i in at], -1)
            kept = []
            for start, end in zip([0, *(i + 1 for i in at)], [*at, len(block)]):
                kept.extend(block[start:end])
        else:
            kept = block
        sums.add(changed)
        lines = sorted(kept + changed) if changed else kept  # two sorted runs: one linear merge, in C
        if lines:
            write(lines)
        if deleted:
            on_deleted(sorted(deleted))
            deleted_total += len(deleted)
    return deleted_total


def keys_of(lines: list[bytes]) -> list[bytes]:
    """The keys of ``<key> TAB <md5>`` lines."""
    return [line[: -HASH_HEX - 1] for line in lines]


def _index_of(block: list[bytes], key: bytes) -> int | None:
    """Where the line of ``key`` is in the sorted ``block``, or None (the key and its tab start only that line)."""
    import bisect

    probe = key + b"\t"
    at = bisect.bisect_left(block, probe)
    return at if at < len(block) and block[at].startswith(probe) else None
