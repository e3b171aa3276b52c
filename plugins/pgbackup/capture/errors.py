"""What a failed capture tells the operator: the causes they can act on, in their words."""

from __future__ import annotations

import errno
from pathlib import Path

import psycopg2

from pgbackup.capture.dump import DumpError


def translate_capture_error(exc: BaseException, where: Path) -> BaseException:
    """ENOSPC and a failed database session as a :class:`DumpError` the operator can act on; any other error unchanged.

    ``where`` is the file being written when the disk filled up.  The capture has
    already removed its partial files when this is called.
    """
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return DumpError(f"local disk full while writing {where}; the partial files were removed and older backups left as they were")
    if isinstance(exc, psycopg2.Error):
        first = (str(exc).strip().splitlines() or ["connection lost"])[0]
        hint = getattr(getattr(exc, "diag", None), "message_hint", None)
        # PostgreSQL's hint says what to change (e.g. "You might need to increase max_locks_per_transaction.").
        hint = f" (HINT: {hint.strip()})" if hint and hint.strip() not in first else ""
        return DumpError(f"the backup's database session failed: {first}{hint}; nothing was kept")
    return exc
