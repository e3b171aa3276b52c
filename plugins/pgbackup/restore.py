"""Restore a full backup's archive into a database with pg_restore."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from child_process import ChildRegistry
from pgbackup.compression import decompressed_chunks
from pgbackup.postgres import PgTarget, PgTools

log = logging.getLogger(__name__)


class RestoreError(RuntimeError):
    """pg_restore failed; the target may hold a partial restore."""


class ArchiveRestore:
    """Decompress a ``.dump.zst`` to a temporary file and ``pg_restore`` it (parallel with ``jobs`` > 1).

    A temporary file, not a pipe, because parallel pg_restore needs a seekable archive.
    """

    def __init__(self, tools: PgTools, *, logger: logging.Logger | None = None) -> None:
        self.tools = tools
        self.log = logger or log
        self.children = ChildRegistry()

    def terminate(self) -> None:
        self.children.terminate_all()

    def run(self, archive: str | Path, target: PgTarget, *, expected_uncompressed: int | None = None, jobs: int = 1, work_dir: str | None = None) -> None:
        with tempfile.NamedTemporaryFile(prefix="pgbackup-restore-", suffix=".dump", dir=work_dir) as plain, open(archive, "rb") as compressed:
            for chunk in decompressed_chunks(compressed, expected_bytes=expected_uncompressed, source=str(archive)):
                plain.write(chunk)
            plain.flush()
            argv = [self.tools.pg_restore, "--no-password", "--exit-on-error", f"--jobs={jobs}", f"--dbname={target.dbname}", plain.name]
            self.log.info("Restoring %s into %s with pg_restore %s (%s jobs)", archive, target.describe(), self.tools.version, jobs)
            with target.libpq_env() as env:
                child = self.children.start(argv, env=env, log=self.log, stdout=None)
                try:
                    with child:
                        code = child.wait()
                finally:
                    self.children.forget(child)
        if code != 0:
            raise RestoreError(f"pg_restore into {target.describe()} failed with exit code {code}: {child.stderr_tail.splitlines()[-1:]}")
