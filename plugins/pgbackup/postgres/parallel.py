"""Per-table work spread over several connections that share one snapshot.

Both the capture (row keys and hashes of every table) and the restore check
(fingerprints of every table) read whole tables; on connections that imported
the same exported snapshot those reads can overlap and still see exactly one
consistent state.  psycopg2 releases the GIL while the server works, so threads
are enough.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import psycopg2.extensions


def spread_over_connections(conns: Sequence[Any], items: Sequence[Hashable], work: Callable[[Any, Any], Any], *,
                            before_each: Callable[[], None] | None = None,
                            on_error: Callable[[], None] | None = None) -> dict[Any, Any]:
    """``{item: work(cursor, item)}``, the items taken in the order given by every connection at once.

    The first connection works in this thread, each other one in a thread of its
    own.  The first error stops every connection from taking another item, calls
    ``on_error`` (e.g. to cancel the queries still running) and is raised; a
    query cancelled because of it is never the error reported.  ``before_each``
    runs before every item (e.g. to raise when the task is being killed).
    """
    pending: queue.Queue = queue.Queue()
    for item in items:
        pending.put(item)
    results: dict[Any, Any] = {}
    errors: list[BaseException] = []

    def drain(conn) -> None:
        try:
            with conn.cursor() as cur:
                while not errors:
                    try:
                        item = pending.get_nowait()
                    except queue.Empty:
                        return
                    if before_each is not None:
                        before_each()
                    results[item] = work(cur, item)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)
            if on_error is not None:
                on_error()

    threads = [threading.Thread(target=drain, args=(conn,), daemon=True) for conn in conns[1:]]
    for thread in threads:
        thread.start()
    drain(conns[0])
    for thread in threads:
        thread.join()
    if errors:
        real = [e for e in errors if not isinstance(e, psycopg2.extensions.QueryCanceledError)]
        raise (real or errors)[0]
    return results
