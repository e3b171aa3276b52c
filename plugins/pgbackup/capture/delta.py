"""The incremental backup's object format: a framed stream of per-table sections, zstd-compressed.

Each section is a JSON header (table, action, columns) followed by its rows in
PostgreSQL's COPY text format, so capture and restore both stream through
``COPY ... TO/FROM STDOUT`` and nothing is held in memory.  Frames are
``<type byte><4-byte big-endian length><payload>``:

- ``H`` a section header (JSON), ``D`` data of the current section, ``E`` its end;
- ``Z`` the end of the stream: a file without it is truncated.

No frame is longer than ``MAX_FRAME``; ``E`` and ``Z`` carry nothing.  A header must
be a JSON object with a known action.  Anything else is a :class:`DeltaFormatError`.

Actions: ``delete`` (the rows' key texts), ``upsert`` (whole rows, replacing
rows with the same primary key) and ``replace`` (the whole table, for tables
without a primary key).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

MAGIC = b"PGBACKUP-DELTA 1\n"
ACTIONS = ("delete", "upsert", "replace")
_FRAME = struct.Struct(">cI")
MAX_FRAME = 1 << 20


class DeltaFormatError(ValueError):
    """The stream is not a whole, well-formed incremental object."""


class DeltaWriter:
    """Writes the magic, then a section per :meth:`section`, then (at :meth:`close`) the end frame.

    ``data_frame`` is the most data one ``D`` frame carries (tests make it small, to cut rows anywhere).
    """

    def __init__(self, out: IO[bytes], *, data_frame: int = MAX_FRAME) -> None:
        if not 0 < data_frame <= MAX_FRAME:
            raise ValueError(f"data frames hold 1..{MAX_FRAME} bytes, not {data_frame}")
        self.out = out
        self.data_frame = data_frame
        self.out.write(MAGIC)
        self.sections = 0

    def _frame(self, kind: bytes, payload: bytes = b"") -> None:
        self.out.write(_FRAME.pack(kind, len(payload)))
        if payload:
            self.out.write(payload)

    @contextmanager
    def section(self, header: dict[str, Any]) -> Iterator[_SectionSink]:
        if header.get("action") not in ACTIONS:
            raise ValueError(f"unknown section action {header.get('action')!r}")
        encoded = json.dumps(header, sort_keys=True).encode()
        if len(encoded) > MAX_FRAME:
            raise ValueError(f"section header of {header.get('table')!r} is {len(encoded)} bytes, over the {MAX_FRAME} a frame holds")
        self._frame(b"H", encoded)
        sink = _SectionSink(self)
        yield sink
        self._frame(b"E")
        self.sections += 1

    def close(self) -> None:
        self._frame(b"Z")


class _SectionSink:
    """File-like target for ``cursor.copy_expert``: every write becomes data frames."""

    def __init__(self, writer: DeltaWriter) -> None:
        self.writer = writer
        self.bytes = 0

    def write(self, data: bytes | str) -> int:
        if isinstance(data, str):
            data = data.encode()
        step = self.writer.data_frame
        for start in range(0, len(data), step):
            self.writer._frame(b"D", data[start : start + step])
        self.bytes += len(data)
        return len(data)


class DeltaReader:
    """Reads sections in order; each section's data must be consumed (or is skipped) before the next."""

    def __init__(self, stream: IO[bytes], *, source: str = "incremental object") -> None:
        self.stream = stream
        self.source = source
        if self._read_exact(len(MAGIC)) != MAGIC:
            raise DeltaFormatError(f"{source} is not a pgbackup incremental object")

    def _read_exact(self, n: int) -> bytes:
        chunks, remaining = [], n
        while remaining:
            chunk = self.stream.read(remaining)
            if not chunk:
                raise DeltaFormatError(f"{self.source} ends in the middle of a frame: truncated")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _next_frame(self) -> tuple[bytes, int]:
        kind, length = _FRAME.unpack(self._read_exact(_FRAME.size))
        if kind not in (b"H", b"D", b"E", b"Z") or length > MAX_FRAME or (kind in (b"E", b"Z") and length):
            raise DeltaFormatError(f"{self.source} has a corrupt frame")
        return kind, length

    def _header(self, length: int) -> dict[str, Any]:
        payload = self._read_exact(length)
        try:
            header = json.loads(payload)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both
            raise DeltaFormatError(f"{self.source} has a corrupt section header") from None
        if not isinstance(header, dict) or header.get("action") not in ACTIONS:
            raise DeltaFormatError(f"{self.source} has a section header without a known action: {payload[:80]!r}")
        return header

    def sections(self) -> Iterator[tuple[dict[str, Any], SectionSource]]:
        while True:
            kind, length = self._next_frame()
            if kind == b"Z":
                if self.stream.read(1):
                    raise DeltaFormatError(f"{self.source} has data after its end")
                return
            if kind != b"H":
                raise DeltaFormatError(f"{self.source}: expected a section header")
            header = self._header(length)
            source = SectionSource(self)
            yield header, source
            source.drain()


class SectionSource:
    """File-like source for ``cursor.copy_expert`` (COPY ... FROM STDIN): the section's data, then EOF."""

    def __init__(self, reader: DeltaReader) -> None:
        self.reader = reader
        self.buffer = b""
        self.pos = 0  # read offset into buffer: slicing a 1 MiB frame per 8 KiB read would be quadratic
        self.done = False
        self.bytes = 0

    def _fill(self) -> bool:
        """Load the next data frame; False at the section's end."""
        while not self.done:
            kind, length = self.reader._next_frame()
            if kind == b"E":
                self.done = True
            elif kind == b"D":
                self.buffer, self.pos = self.buffer[self.pos :] + self.reader._read_exact(length), 0
                return True
            else:
                raise DeltaFormatError(f"{self.reader.source}: section ends without its end frame")
        return False

    def read(self, size: int = -1) -> bytes:
        while self.pos >= len(self.buffer):  # a loop: an empty data frame is not the end of the data
            if not self._fill():
                return b""
        end = len(self.buffer) if size < 0 else min(len(self.buffer), self.pos + size)
        data = self.buffer[self.pos : end]
        self.pos = end
        self.bytes += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        while self.buffer.find(b"\n", self.pos) < 0 and self._fill():
            pass
        cut = self.buffer.find(b"\n", self.pos)
        end = len(self.buffer) if cut < 0 else cut + 1
        data = self.buffer[self.pos : end]
        self.pos = end
        self.bytes += len(data)
        return data

    def lines(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def drain(self) -> None:
        while self.read(MAX_FRAME):
            pass
