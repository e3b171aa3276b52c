"""The capture's pg_dump runs: the full's ``pg_dump --format=custom`` streamed through zstd and sha256 into one
file, and the hash of ``pg_dump --schema-only`` that tells whether the schema changed since a parent.

Nothing half-written survives a failure: the output is ``<name>.partial`` until
pg_dump has exited 0 and the file is fsynced, then renamed into place.  Both run
their pg_dump through a :class:`ChildRegistry`, the caller's when given, so one
``terminate_all`` stops whatever the capture has running.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pgbackup.capture.compression import CHUNK, Compression, HashingWriter
from pgbackup.postgres.target import PgTarget, PgTools
from rclone_provider.child_process import ChildRegistry

log = logging.getLogger(__name__)
PROGRESS_EVERY_SECONDS = 30


class DumpError(RuntimeError):
    """pg_dump failed or its output could not be written; nothing was kept."""


@dataclass(frozen=True)
class DumpArtifact:
    """A finished, compressed dump on local disk: where, how big, its sha256, and when pg_dump ran."""

    path: str
    bytes: int
    sha256: str
    uncompressed_bytes: int
    started_at: str
    finished_at: str


def pg_dump_failure(stderr: str) -> str:
    """The line of pg_dump's error output that says what failed, followed by PostgreSQL's HINT when there is one.

    pg_dump ends with its own summary ("... Command was: LOCK TABLE ..."); the hint
    (say, to raise ``max_locks_per_transaction``) comes before it and is what the operator needs.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "no error output"
    errors = [line for line in lines if "error:" in line.lower() and not line.lower().startswith("pg_dump: detail:")]
    message = errors[-1] if errors else lines[-1]
    hints = [line for line in lines if "HINT:" in line and line not in message]
    return " ".join([message, *dict.fromkeys(hints)])


class PgDump:
    """One pg_dump run; ``terminate()`` (from ``on_kill``) stops pg_dump's whole process group."""

    def __init__(self, target: PgTarget, tools: PgTools, compression: Compression, *, logger: logging.Logger | None = None,
                 children: ChildRegistry | None = None) -> None:
        self.target = target
        self.tools = tools
        self.compression = compression
        self.log = logger or log
        self.children = children if children is not None else ChildRegistry()

    def terminate(self) -> None:
        self.children.terminate_all()

    def run(self, out_path: Path, *, snapshot: str | None = None, on_first_output: Callable[[], None] | None = None) -> DumpArtifact:
        """Dump into ``out_path``; with ``snapshot`` (an exported snapshot id) pg_dump reads exactly that snapshot.

        ``on_first_output`` runs once pg_dump has written its first bytes, before they are
        read on: the custom format writes nothing until pg_dump has locked every table, and
        pg_dump holds those locks until it exits.  An error it raises stops pg_dump.
        """
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        partial = out_path.with_name(out_path.name + ".partial")
        argv = [self.tools.pg_dump, "--format=custom", "--compress=0", "--no-password"]
        if snapshot:
            argv.append(f"--snapshot={snapshot}")
        started = datetime.now(timezone.utc)
        clock = time.monotonic()
        self.log.info(
            "Dumping %s with pg_dump %s into %s (zstd level %s, %s threads)",
            self.target.describe(), self.tools.version, out_path, self.compression.level, self.compression.workers,
        )
        try:
            with self.target.libpq_env() as env:
                child = self.children.start(argv, env=env, log=self.log)
                try:
                    with child, open(partial, "xb") as raw_out:
                        sink = HashingWriter(raw_out)
                        raw_bytes = self._compress(child.stdout, sink, clock, on_first_output)
                        code = child.wait()
                        raw_out.flush()
                        os.fsync(raw_out.fileno())
                finally:
                    self.children.forget(child)
            if code != 0:
                raise DumpError(f"pg_dump of {self.target.describe()} failed with exit code {code}: {pg_dump_failure(child.stderr_tail)}")
            os.replace(partial, out_path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise DumpError(f"local disk full while writing {partial}; the partial file was removed") from None
            raise
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        elapsed = time.monotonic() - clock
        self.log.info(
            "Dump finished in %.1fs: %s bytes from pg_dump, %s bytes stored (%.1f%%), sha256 %s",
            elapsed, raw_bytes, sink.bytes, 100 * sink.bytes / max(raw_bytes, 1), sink.sha256,
        )
        return DumpArtifact(
            path=str(out_path),
            bytes=sink.bytes,
            sha256=sink.sha256,
            uncompressed_bytes=raw_bytes,
            started_at=started.isoformat(),
            finished_at=datetime.now(timezone.utc).isoformat(),
        )

    def _compress(self, source, sink: HashingWriter, clock: float, on_first_output: Callable[[], None] | None = None) -> int:
        raw_bytes = 0
        next_report = clock + PROGRESS_EVERY_SECONDS
        with self.compression.compressor().stream_writer(sink, closefd=False) as zwriter:
            for chunk in iter(lambda: source.read(CHUNK), b""):
                if on_first_output is not None:
                    on_first_output()
                    on_first_output = None
                zwriter.write(chunk)
                raw_bytes += len(chunk)
                if time.monotonic() >= next_report:
                    self.log.info("... %.1f MB dumped, %.1f MB written, %.0fs", raw_bytes / 1e6, sink.bytes / 1e6, time.monotonic() - clock)
                    next_report += PROGRESS_EVERY_SECONDS
        return raw_bytes


def schema_sha256(target: PgTarget, tools: PgTools, snapshot: str, *, children: ChildRegistry,
                  logger: logging.Logger | None = None) -> str:
    """sha256 of ``pg_dump --schema-only`` of the exported ``snapshot``, without the per-run ``\\restrict`` token lines."""
    argv = [tools.pg_dump, "--schema-only", "--no-password", f"--snapshot={snapshot}"]
    digest = hashlib.sha256()
    with target.libpq_env() as env:
        child = children.start(argv, env=env, log=logger or log)
        try:
            with child:
                for line in child.stdout:
                    if not line.startswith((b"\\restrict", b"\\unrestrict")):
                        digest.update(line)
                code = child.wait()
        finally:
            children.forget(child)
    if code != 0:
        raise DumpError(f"pg_dump --schema-only of {target.describe()} failed: {pg_dump_failure(child.stderr_tail)}")
    return digest.hexdigest()
