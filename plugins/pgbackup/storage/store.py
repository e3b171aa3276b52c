"""The store protocol (what catalog and retention need of a place holding backups) and the local copy.

:class:`rclone_provider.client.Rclone` and :class:`LocalStore` both satisfy
:class:`BackupStore`, so the local and the remote copies are planned and pruned
by the very same code.  The library types against :class:`StoredObject` (a
Protocol) and never imports the rclone client's own listing type.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Protocol


class StoredObject(Protocol):
    """One file a store lists: what catalog and retention read of it."""

    @property
    def path(self) -> str: ...  # relative to the store's root, ``/``-separated

    @property
    def size(self) -> int: ...  # bytes; negative when the backend does not know

    @property
    def mod_time(self) -> str: ...  # ISO 8601 as the backend reports it; "" when unknown

    @property
    def hashes(self) -> Mapping[str, str]: ...  # {"sha256": "..."} where the backend computed them


def stored_at(mod_time: str) -> datetime | None:
    """When a listed object was last written (its ``mod_time``, as rclone or the local store give it), or None if unknown.

    rclone prints nanoseconds, which ``datetime`` cannot hold: the digits past microseconds are dropped.
    """
    try:
        moment = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", mod_time).replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return moment.astimezone(timezone.utc) if moment.tzinfo else None


@dataclass(frozen=True)
class LocalObject:
    """A file of the :class:`LocalStore` (a :class:`StoredObject`)."""

    path: str
    size: int
    mod_time: str
    hashes: Mapping[str, str] = field(default_factory=dict)


class BackupStore(Protocol):
    # Sequence, not list: a store may list its own object type (read-only, so covariant).
    def list(self, relative: str = "", *, recursive: bool = False, hashes: bool = False) -> Sequence[StoredObject]: ...
    def read_bytes(self, relative: str) -> bytes: ...
    def read_many(self, relatives: list[str]) -> dict[str, bytes]: ...
    def put_bytes(self, data: bytes, relative: str) -> None: ...
    def delete(self, relative: str) -> None: ...
    def describe(self, relative: str) -> str: ...  # where ``relative`` is, as an operator would type it
    def about(self) -> dict[str, int] | None: ...  # quota (total/used/free) where the backend reports one


def write_replacing(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: written beside it, fsynced, then renamed over it, so a crash
    leaves the old file or none, never half of one."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


class LocalStore:
    """A directory on this machine holding backups in the remote's layout."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def path(self, relative: str) -> Path:
        return self.root / relative.strip("/")

    def list(self, relative: str = "", *, recursive: bool = False, hashes: bool = False) -> list[StoredObject]:
        base = self.path(relative)
        if not base.is_dir():
            return []
        entries = base.rglob("*") if recursive else base.iterdir()
        found = []
        for entry in entries:
            if entry.is_file():
                try:
                    stat = entry.stat()
                except FileNotFoundError:  # renamed or deleted since it was listed (a capture finishing its .partial)
                    continue
                found.append(
                    LocalObject(
                        path=entry.relative_to(self.root).as_posix(),
                        size=stat.st_size,
                        mod_time=datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(),
                    )
                )
        return sorted(found, key=lambda o: o.path)

    def read_bytes(self, relative: str) -> bytes:
        return self.path(relative).read_bytes()

    def read_many(self, relatives: list[str]) -> dict[str, bytes]:
        return {r: self.path(r).read_bytes() for r in relatives if self.path(r).is_file()}

    def describe(self, relative: str) -> str:
        return str(self.path(relative))

    def about(self) -> None:
        return None  # status reports the local disk itself (free space), not a quota

    def put_bytes(self, data: bytes, relative: str) -> None:
        """Write atomically: a reader sees the old file or the whole new one."""
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_replacing(target, data)

    @contextmanager
    def open_read(self, relative: str) -> Iterator[IO[bytes]]:
        with open(self.path(relative), "rb") as stream:
            yield stream

    def delete(self, relative: str) -> None:
        self.path(relative).unlink(missing_ok=True)
