"""Prove a compressed custom-format dump is readable before it is uploaded or restored."""

from __future__ import annotations

import logging
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pgbackup.capture.compression import (
    CorruptArchiveError,
    DecompressedStream,
    decompressed_chunks,
)
from pgbackup.capture.delta import DeltaFormatError, DeltaReader
from pgbackup.postgres.target import PgTools
from rclone_provider.child_process import ChildRegistry, ProcessCancelled

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchiveCheck:
    toc_entries: int
    table_data_entries: int
    uncompressed_bytes: int


def check_archive(path: str | Path, tools: PgTools, *, expected_uncompressed: int | None = None, logger: logging.Logger | None = None,
                  may_be_empty: bool = False, children: ChildRegistry | None = None) -> ArchiveCheck:
    """Decompress the whole object (zstd checksum and length checked) and have ``pg_restore --list`` read its TOC.

    pg_restore stops reading after the table of contents; the rest of the stream
    is still decompressed so that damage anywhere in the file is found now, not
    during a restore.  An empty table of contents is damage unless ``may_be_empty``:
    the capture saw no relation and no sequence (a database not yet given its
    schema, as on a first deploy), whose pg_dump archive lists nothing.  pg_restore
    runs through ``children`` (the caller's registry, so ``on_kill`` stops it); a
    check stopped that way raises :class:`ProcessCancelled`, never "corrupt".
    """
    logger = logger or log
    children = children if children is not None else ChildRegistry()
    with tempfile.TemporaryFile() as listing, open(path, "rb") as compressed:
        child = children.start([tools.pg_restore, "--list"], env=None, log=logger, stdin=subprocess.PIPE, stdout=listing)
        total = 0
        try:
            with child:
                feeding = True
                try:
                    for chunk in decompressed_chunks(compressed, expected_bytes=expected_uncompressed, source=str(path)):
                        if children.cancelled:
                            break  # the task is being killed: reading on proves nothing
                        total += len(chunk)
                        if feeding:
                            try:
                                child.stdin.write(chunk)
                            except BrokenPipeError:
                                feeding = False  # pg_restore has read the TOC and exited
                finally:
                    try:
                        child.stdin.close()
                    except BrokenPipeError:
                        pass
                code = child.wait()
        finally:
            children.forget(child)
        if children.cancelled:
            raise ProcessCancelled(f"the check of {path} was stopped before it finished; nothing is known of the archive")
        if code != 0:
            raise CorruptArchiveError(f"pg_restore --list cannot read {path}: {child.stderr_tail.splitlines()[-1:] or code}")
        listing.seek(0)
        lines = [line for line in listing.read().decode(errors="replace").splitlines() if line and not line.startswith(";")]
    table_data = sum(1 for line in lines if " TABLE DATA " in line)
    if not lines and not may_be_empty:
        raise CorruptArchiveError(f"{path} holds an empty table of contents")
    logger.info("Archive %s is readable: %s TOC entries, %s with table data, %s bytes uncompressed", path, len(lines), table_data, total)
    return ArchiveCheck(toc_entries=len(lines), table_data_entries=table_data, uncompressed_bytes=total)


def check_delta(path: str | Path, *, expected_uncompressed: int | None = None, logger: logging.Logger | None = None) -> ArchiveCheck:
    """Read an incremental object end to end: zstd checksum, byte count, and every frame up to the end marker."""
    logger = logger or log
    with open(path, "rb") as compressed:
        stream = DecompressedStream(compressed, expected_bytes=expected_uncompressed, source=str(path))
        sections = 0
        try:
            for _header, data in DeltaReader(stream, source=str(path)).sections():
                data.drain()
                sections += 1
        except DeltaFormatError as exc:
            raise CorruptArchiveError(str(exc)) from None
    logger.info("Incremental %s is readable: %s sections, %s bytes uncompressed", path, sections, stream.total)
    return ArchiveCheck(toc_entries=sections, table_data_entries=sections, uncompressed_bytes=stream.total)

