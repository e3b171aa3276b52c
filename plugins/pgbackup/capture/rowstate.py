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
states is byte comparisons, never decoding.  Whatever comes from the server (a full's
lines, an incremental's changed rows and current keys) is checked in that order block
by block (``sorted`` on sorted input is linear, in C) and fails loudly if it does not
hold: a wrongly ordered merge would hide deletes.  A merge writes its lines sorted by
Python; a complete state's file is proven by its checksum, so its order — checked
when it was first written — is not checked again each time an incremental reads it.

A state proves itself before it is trusted.  Each file is one zstd frame with its
content checksum; ``mark_complete`` writes ``CHECKSUMS.json`` (the format and every
file's size, sha256 — taken while the file was written, or carried with an unchanged
table's file from its proven parent — and the fingerprint of its lines), then ``COMPLETE``.  :meth:`RowKeyState.damage` re-checks all
of it in one line of text, and reading a file that is truncated, changed, missing or
not listed raises :class:`StateDamaged` — a :class:`StateMismatch`, on which the capture
promotes to a full — never a zstd or hex decoding error.  A changed byte that keeps the
lines sorted would otherwise give a committed incremental no restore can reproduce.

States of an older format (``*.keys.zst``, JSON keys, no hashes; or without checksums)
are not read: the capture promotes to a full backup, which writes this format.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import shutil
import struct
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import zstandard
from psycopg2 import sql

from pgbackup.capture.compression import CHUNK
from pgbackup.postgres.tables import TableInfo

FORMAT = "pgbackup-rowstate-4"
CHECKSUMS = "CHECKSUMS.json"
SUFFIX = ".rows.zst"
HASH_HEX = 32
# COPY text format escapes these bytes (backslash first); ordering by the escaped text orders the printed lines.
_COPY_ESCAPES = (("\\", "\\\\"), ("\b", "\\b"), ("\t", "\\t"), ("\n", "\\n"), ("\v", "\\v"), ("\f", "\\f"), ("\r", "\\r"))


class StateOrderError(RuntimeError):
    """A state file or key stream is not in bytewise order: merging it would give wrong deletes."""


class StateMismatch(RuntimeError):
    """The parent's state, the changed rows and the current keys do not add up: never guess, fail."""


class StateDamaged(StateMismatch):
    """A state file is not what was written (truncated, changed, missing, not listed): nothing of it may be used."""


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
    try:
        raw = binascii.unhexlify(b"".join([line[-HASH_HEX:] for line in lines]))
        halves = struct.unpack(f">{2 * len(lines)}q", raw)
    except (binascii.Error, struct.error):
        bad = next((line for line in lines if not _is_state_line(line)), lines[0])
        raise StateDamaged(f"a line is not <key> TAB <row md5>: {bad[:80]!r}") from None
    return sum(halves[0::2]), sum(halves[1::2])


def _is_state_line(line: bytes) -> bool:
    tail = line[-HASH_HEX - 1 :]
    return len(tail) == HASH_HEX + 1 and tail[:1] == b"\t" and all(c in b"0123456789abcdef" for c in tail[1:])


@dataclass(frozen=True)
class FileChecksum:
    """What ``CHECKSUMS.json`` records of one state file: its size, the sha256 of its bytes and the fingerprint of its lines.

    The fingerprint (``{"rows", "hash"}``, as ``table_fingerprint`` gives it) lets an
    incremental check the parent's state against the parent's manifest without summing
    every line: the sha256 ties the lines to this listing.  None when not known.
    """

    bytes: int
    sha256: str
    fingerprint: dict | None = None

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
class StateChecksums:
    """``CHECKSUMS.json``: the state's format and, per file name, its :class:`FileChecksum`."""

    format: str
    files: dict[str, FileChecksum]

    def to_json(self) -> str:
        files = {name: {"bytes": c.bytes, "sha256": c.sha256, **({"fingerprint": c.fingerprint} if c.fingerprint else {})}
                 for name, c in sorted(self.files.items())}
        return json.dumps({"format": self.format, "files": files}, indent=1, sort_keys=True) + "\n"

    @classmethod
    def parse(cls, text: str) -> StateChecksums:
        """Raises ValueError (or KeyError, TypeError) unless ``text`` is a whole checksum file."""
        data = json.loads(text)
        files = {str(name): FileChecksum(int(c["bytes"]), str(c["sha256"]), _fingerprint(c.get("fingerprint")))
                 for name, c in data["files"].items()}
        return cls(str(data["format"]), files)


def _fingerprint(data) -> dict | None:
    if data is None:
        return None
    high, low = str(data["hash"]).split(":")
    return {"rows": int(data["rows"]), "hash": f"{int(high)}:{int(low)}"}


def line_blocks(path: Path, expected: FileChecksum | None = None) -> Iterator[list[bytes]]:
    """The lines of a one-frame zstd file (without newlines) in blocks of about ``CHUNK`` bytes.

    Raises :class:`StateDamaged` when the file is missing, is not one whole zstd frame
    whose content checksum holds, or — given ``expected`` — differs from it.
    """
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise StateDamaged(f"{path} is missing") from None
    with raw:
        yield from _split_lines(_checked_frame(raw, path, expected))


def _checked_frame(raw, path: Path, expected: FileChecksum | None) -> Iterator[bytes]:
    """The decompressed bytes of ``raw``; at its end, proof that it held exactly one whole frame (and ``expected``)."""
    frame = zstandard.ZstdDecompressor().decompressobj()
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: raw.read(CHUNK), b""):
        digest.update(chunk)
        size += len(chunk)
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
    if expected is not None and not FileChecksum(size, digest.hexdigest()).same_file(expected):
        raise StateDamaged(f"{path} {_difference(FileChecksum(size, digest.hexdigest()), expected)}")


def _difference(found: FileChecksum, expected: FileChecksum) -> str:
    """How a whole zstd frame differs from what was recorded of it (a cut frame is reported as truncated before this)."""
    if found.bytes != expected.bytes:
        return f"was rewritten ({found.bytes} bytes, {expected.bytes} recorded)"
    return f"is corrupt: it does not match its checksum (sha256 {found.sha256[:12]}…, {expected.sha256[:12]}… recorded)"


def _file_damage(path: Path, expected: FileChecksum) -> str:
    """What is wrong with a file whose checksum differs: read it as a frame, so a cut one is called truncated."""
    try:
        with open(path, "rb") as raw:
            for _ in _checked_frame(raw, path, expected):
                pass
    except StateDamaged as exc:
        return str(exc)
    return f"{path} changed while it was read"


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
    """The row-key state of one backup: ``<root>/<backup id>/<table>.rows.zst``, then ``FORMAT``, ``CHECKSUMS.json``, ``COMPLETE``."""

    def __init__(self, root: Path, backup_id: str) -> None:
        self.dir = Path(root) / backup_id
        # Checksums known without reading the files again: taken while writing, or carried from a proven parent.
        self._known: dict[str, FileChecksum] = {}
        self._fingerprints: dict[str, dict] = {}  # by file name: the fingerprint of the lines written

    def exists(self) -> bool:
        return (self.dir / "COMPLETE").is_file()

    def current_format(self) -> bool:
        """False for a state written by an older version (JSON keys without row hashes, or no checksums)."""
        return self._format() == FORMAT

    def _format(self) -> str | None:
        marker = self.dir / "FORMAT"
        return marker.read_text(errors="replace").strip() if marker.is_file() else None

    def path(self, table: str) -> Path:
        return self.dir / f"{file_name(table)}{SUFFIX}"

    def writer(self, table: str):
        """A zstd stream writer for the table's file (a C object: COPY writes every row to it without Python).

        The compressed bytes are hashed as they are written, so :meth:`mark_complete`
        records the file's checksum without reading it back.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(table)
        raw = _HashingFile(open(path, "wb"), lambda checksum: self._known.__setitem__(path.name, checksum))
        compressor = zstandard.ZstdCompressor(level=1, write_checksum=True)  # level 1: twice level 3's speed, for a few % more bytes
        return _OwningWriter(raw, compressor.stream_writer(raw, closefd=False))

    def carry(self, parent: RowKeyState, table: str) -> None:
        """An unchanged table's file is the parent's: a hard link (or a copy), with the checksum the parent's listing records.

        The parent must have been proven (:meth:`damage` is None) first: what is carried is
        its recorded checksum, so a file damaged later is still found when it is next read.
        """
        source, dest = parent.path(table), self.path(table)
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

    def record_fingerprint(self, table: str, fingerprint: dict) -> None:
        """The fingerprint of the lines written for ``table``, recorded in the listing by :meth:`mark_complete`."""
        self._fingerprints[self.path(table).name] = dict(fingerprint)

    def recorded_fingerprint(self, table: str) -> dict | None:
        """The fingerprint the complete state's listing records for ``table``'s file, or None (:class:`StateDamaged` if unlisted)."""
        expected = self.checksums().files.get(self.path(table).name)
        if expected is None:
            raise StateDamaged(f"{self.path(table)} is not listed in {self.dir / CHECKSUMS}")
        return expected.fingerprint

    def blocks(self, table: str) -> Iterator[list[bytes]]:
        """The table's lines in blocks, order and integrity checked.

        A missing file is an error, never "no rows": that would hide deletes.  In a
        complete state the file must also be the one ``CHECKSUMS.json`` lists.
        """
        path = self.path(table)
        if self.exists():
            expected = self.checksums().files.get(path.name)
            if expected is None:
                raise StateDamaged(f"{path} is not listed in {self.dir / CHECKSUMS}")
            # Proven by its checksum (at the end of the file, before the reader's work is kept): its order was checked when written.
            return line_blocks(path, expected)
        return checked_order(line_blocks(path), f"row-key state {path}")

    def fingerprint(self, table: str) -> TableFingerprintSums:
        """The sums of the table's lines, read whole; recorded for :meth:`mark_complete`."""
        sums = TableFingerprintSums()
        for block in self.blocks(table):
            sums.add(block)
        self.record_fingerprint(table, sums.to_dict())
        return sums

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
        whole (its sha256), so an unchanged table's file is proven before an incremental
        links it into its own state.
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
        return None

    def mark_complete(self) -> None:
        """Record the format and every file's checksum, then ``COMPLETE``: from here on the state proves itself.

        A state without keyed tables is complete too (an empty listing): its folder is created here.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        # Files written or carried by this object are not read again; any other is hashed here.
        files = {}
        for path in sorted(self.dir.glob(f"*{SUFFIX}")):
            checksum = self._known.get(path.name) or FileChecksum.of(path)
            files[path.name] = FileChecksum(checksum.bytes, checksum.sha256, self._fingerprints.get(path.name))
        (self.dir / "FORMAT").write_text(FORMAT + "\n")
        _write_replacing(self.dir / CHECKSUMS, StateChecksums(FORMAT, files).to_json())
        (self.dir / "COMPLETE").write_text(datetime.now(timezone.utc).isoformat())


def _write_replacing(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a crash leaves the old file or none, never half of one)."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


class _HashingFile:
    """A file that hashes what is written to it; on close it hands its :class:`FileChecksum` to ``on_close``."""

    def __init__(self, raw, on_close) -> None:
        self.raw, self.on_close = raw, on_close
        self.digest, self.size = hashlib.sha256(), 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        self.raw.close()
        self.on_close(FileChecksum(self.size, self.digest.hexdigest()))


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


def table_of(name: str) -> str:
    """The table a state file name is of: the inverse of :func:`file_name` (and the suffix)."""
    return urllib.parse.unquote(name.removesuffix(SUFFIX))


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
                out, sums: TableFingerprintSums, on_deleted, parent_seen: TableFingerprintSums | None = None) -> int:
    """Write the new state — parent lines minus deleted and updated keys, plus the changed lines — into ``out``.

    ``sums`` (the parent's fingerprint) is adjusted to the new rows; ``on_deleted`` gets
    each window's deleted keys.  Without ``current_keys`` the caller has proved there
    were no deletes.  With them, every current key must be a parent key or a changed
    row and every changed row a current key, else :class:`StateMismatch`.  Returns the
    number of deleted keys; ``parent_seen``, if given, gets the fingerprint of the parent's
    lines, for a caller that must check them against the parent's manifest (one whose
    state does not record it).
    """
    deleted_total = 0
    for block, changed, current in _windows(parent_blocks, changed_lines, current_keys):
        if parent_seen is not None:
            parent_seen.add(block)
        if current is None and not changed:
            if block:
                out.write(b"\n".join(block) + b"\n")
            continue
        changed_keys = keys_of(changed)
        deleted: set[bytes] = set()
        if current is None:
            remove = set(changed_keys)
        else:
            parent_set, changed_set, current_set = set(keys_of(block)), set(changed_keys), set(current)
            if len(current_set) != len(current):
                raise StateMismatch("the current keys repeat a key")
            if not changed_set <= current_set or not current_set <= parent_set | changed_set:
                raise StateMismatch("current keys, changed rows and the parent's keys do not add up")
            deleted = parent_set - current_set
            remove = (changed_set & parent_set) | deleted
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
            out.write(b"\n".join(lines) + b"\n")
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
