"""The local copy as a store with the same reading/deleting surface as :class:`rclone_provider.client.Rclone`.

Catalog and retention take either, so the local and the remote copies are
planned and pruned by the very same code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Protocol

from rclone_provider.client import StoredObject


class BackupStore(Protocol):
    def list(self, relative: str = "", *, recursive: bool = False, hashes: bool = False) -> list[StoredObject]: ...
    def read_bytes(self, relative: str) -> bytes: ...
    def read_many(self, relatives: list[str]) -> dict[str, bytes]: ...
    def put_bytes(self, data: bytes, relative: str) -> None: ...
    def delete(self, relative: str) -> None: ...
    def describe(self, relative: str) -> str: ...  # where ``relative`` is, as an operator would type it
    def about(self) -> dict[str, int] | None: ...  # quota (total/used/free) where the backend reports one


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
                stat = entry.stat()
                found.append(
                    StoredObject(
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
        tmp = target.with_name(target.name + ".partial")
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)

    @contextmanager
    def open_read(self, relative: str) -> Iterator[IO[bytes]]:
        with open(self.path(relative), "rb") as stream:
            yield stream

    def delete(self, relative: str) -> None:
        self.path(relative).unlink(missing_ok=True)
