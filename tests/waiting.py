"""Waiting on observable state instead of sleeping: a condition polled until it holds, a call run in a thread
whose outcome (value or exception) the test inspects, and the PostgreSQL sessions a test waits for."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from conftest import admin_connection

POLL = 0.05  # seconds between two looks at the state waited for


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll ``condition`` until it returns something true (returned); AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f}s for {what}")
        time.sleep(POLL)


def returned_or_raised(fn: Callable, *args, **kwargs) -> Any:
    """What ``fn(*args, **kwargs)`` returned, or the exception it raised (for the test to inspect)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return exc


class InThread:
    """``fn(*args)`` started in a thread; ``outcome()`` joins it and gives what it returned or raised."""

    def __init__(self, fn: Callable, *args, **kwargs) -> None:
        self._outcome: list[Any] = []
        self._thread = threading.Thread(target=lambda: self._outcome.append(returned_or_raised(fn, *args, **kwargs)))
        self._thread.start()

    def outcome(self, timeout: float = 60) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"still running after {timeout:.0f}s"
        return self._outcome[0]


def backends(dbname: str, application_name: str = "pg_dump", *, waiting_on_lock: bool = False, connect: Callable = admin_connection) -> list[int]:
    """Pids of ``application_name``'s sessions on ``dbname`` (with ``waiting_on_lock``: only those waiting for a lock),
    asked of the server ``connect()`` reaches (default: the tests' shared server)."""
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = %s"
                        " AND (NOT %s OR wait_event_type = 'Lock')", (application_name, dbname, waiting_on_lock))
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def wait_for_lock_wait(dbname: str, application_name: str = "pg_dump", timeout: float = 60, connect: Callable = admin_connection) -> list[int]:
    """Wait until a session of ``application_name`` on ``dbname`` is waiting for a lock; its pids."""
    return wait_for(lambda: backends(dbname, application_name, waiting_on_lock=True, connect=connect),
                    f"{application_name} waiting for a lock on {dbname}", timeout)
