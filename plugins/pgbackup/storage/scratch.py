"""Scratch folders under ``<local dir>/tmp/`` that a killed run cannot leave behind for good.

``tempfile.TemporaryDirectory`` removes its folder when its block ends, but a run killed
with SIGKILL (the OOM killer, a lost worker, ``kill -9``) never gets there, and its merge
files stayed in the local folder forever.  Here each run's folder holds a lock file that
the run keeps ``flock``-ed while it lives; the kernel releases that lock when the process
dies, however it dies.  Taking a new scratch folder first removes every folder whose lock
is free: its owner is gone.  A live run's folder is never removed, whichever process or
thread owns it (``flock`` locks belong to open files, so even two folders of one process
exclude each other).

Making a folder and taking its lock happen while holding ``tmp/.sweep.lock``, which the
sweep holds too: the sweep never sees a folder between its creation and its lock.  A
folder without a lock file was therefore left by a process that died while making it.
The sweep touches only names it makes (``<purpose>-<16 hex digits>``): whatever else
is in ``tmp/`` (a database whose prefix is ``tmp`` keeps its local copies there) stays.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = "tmp"
SWEEP_LOCK = ".sweep.lock"
LOCK = ".lock"
_PURPOSE = re.compile(r"[a-z0-9][a-z0-9-]*")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*-[0-9a-f]{16}")


@contextmanager
def scratch_dir(local_dir: str | Path, purpose: str) -> Iterator[Path]:
    """A new, empty folder ``<local_dir>/tmp/<purpose>-<random>``, removed with its contents when the block ends.

    Before it is made, the folders of runs that died are removed.
    """
    if not _PURPOSE.fullmatch(purpose):
        raise ValueError(f"scratch folder purpose must be lowercase letters, digits and '-', got {purpose!r}")
    root = Path(local_dir) / ROOT
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / SWEEP_LOCK):
        remove_stale(root)
        path = _new_folder(root, purpose)
        lock = _lock(path / LOCK, blocking=True)
    try:
        yield path
    finally:
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(lock)  # only now: a sweep must not take the folder while it is being removed


def remove_stale(root: Path) -> list[Path]:
    """Remove the folders in ``root`` whose lock no process holds; returns them.  Call holding the sweep lock."""
    removed = []
    for entry in sorted(root.iterdir()):
        if not _NAME.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            lock = _lock(entry / LOCK, blocking=False, create=False)
        except FileNotFoundError:
            lock = None  # its maker died between making it and locking it (both happen under the sweep lock)
        except BlockingIOError:
            continue  # a live run's
        try:
            shutil.rmtree(entry, ignore_errors=True)
        finally:
            if lock is not None:
                os.close(lock)
        removed.append(entry)
    if removed:
        log.info("Removed %s scratch folder(s) left by runs that died: %s", len(removed), ", ".join(p.name for p in removed))
    return removed


def _new_folder(root: Path, purpose: str) -> Path:
    while True:
        path = root / f"{purpose}-{secrets.token_hex(8)}"
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue  # 64 random bits taken already: draw again


def _lock(path: Path, *, blocking: bool, create: bool = True) -> int:
    """An open descriptor of ``path`` holding an exclusive ``flock``; BlockingIOError when another holds it."""
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = _lock(path, blocking=True)
    try:
        yield
    finally:
        os.close(fd)
