"""Streaming zstd compression with an in-line sha256, and its checked inverse.

The dump is never held in memory nor written twice: pg_dump's bytes go through a
zstd compressor into the output file while the sha256 of what is written is
computed on the way (so the checksum costs no second read).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import zstandard

CHUNK = 1 << 20


class CorruptArchiveError(RuntimeError):
    """The compressed artifact does not decompress to what was written."""


@dataclass(frozen=True)
class Compression:
    """zstd settings; ``threads=0`` means one worker per CPU core.

    Chosen by measurement (``bench/compression.py``, sample shop at scale 40, 2 cores,
    pg_dump 15, median of 3): pg_dump ``-Z0`` piped through multi-threaded zstd level 6
    stores 100.8 % of the bytes of pg_dump's gzip default in 0.63x its wall time and
    0.77x its CPU; level 1 is faster still (0.43x wall) but stores 6.7 % more.
    pg_dump ``-Z9`` stores 2.4 % less than the default at 1.84x the wall time.
    """

    level: int = 6
    threads: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.level <= 19:
            raise ValueError(f"zstd level must be 1..19, got {self.level}")
        if self.threads < 0:
            raise ValueError(f"zstd threads must be >= 0, got {self.threads}")

    @property
    def workers(self) -> int:
        return self.threads or (os.cpu_count() or 1)

    def describe(self) -> dict[str, Any]:
        """What the manifest records, so a restore knows how to read the object."""
        return {"algorithm": "zstd", "level": self.level, "threads": self.workers, "pg_dump_compress": 0}

    def compressor(self) -> zstandard.ZstdCompressor:
        return zstandard.ZstdCompressor(level=self.level, threads=self.workers, write_checksum=True)


class HashingWriter:
    """A file wrapper that counts and sha256-hashes every byte written through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.bytes += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()


def decompressed_chunks(compressed: IO[bytes], *, expected_bytes: int | None = None, source: str = "archive") -> Iterator[bytes]:
    """Yield the decompressed bytes in bounded chunks, then check the stream was whole.

    zstd verifies its frame checksum at the end; the byte count catches a truncated
    object, which a streaming reader would otherwise end early without complaint.
    """
    reader = zstandard.ZstdDecompressor().stream_reader(compressed, read_across_frames=True)
    total = 0
    try:
        for chunk in iter(lambda: reader.read(CHUNK), b""):
            total += len(chunk)
            yield chunk
    except zstandard.ZstdError as exc:
        raise CorruptArchiveError(f"{source} is corrupt: {exc}") from None
    if expected_bytes is not None and total != expected_bytes:
        raise CorruptArchiveError(f"{source} decompressed to {total} bytes, expected {expected_bytes}: truncated or corrupt")


class DecompressedStream:
    """A ``read(n)`` file over :func:`decompressed_chunks`, for readers that pull (COPY FROM, the delta reader)."""

    def __init__(self, compressed: IO[bytes], *, expected_bytes: int | None = None, source: str = "archive") -> None:
        self.chunks = decompressed_chunks(compressed, expected_bytes=expected_bytes, source=source)
        self.buffer = b""
        self.pos = 0
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) - self.pos < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.total += len(chunk)
            self.buffer, self.pos = self.buffer[self.pos :] + chunk, 0
        end = len(self.buffer) if size < 0 else min(len(self.buffer), self.pos + size)
        data = self.buffer[self.pos : end]
        self.pos = end
        return data
