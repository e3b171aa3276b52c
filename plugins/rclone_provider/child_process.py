"""Run external tools (pg_dump, pg_restore, rclone) as killable process groups.

Every child is started in its own session so that one ``killpg`` stops it and
anything it forked; Airflow's ``on_kill`` and our timeouts rely on that.  Its
stderr is streamed line by line into a logger from a thread, so the task log
shows progress while stdout stays free to carry data (a dump, a JSON listing).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import IO


class ChildProcess:
    """One running command: its stdout is the caller's, its stderr goes to ``log``.

    The last lines of stderr are kept (``stderr_tail``) so that a failure can be
    reported with the tool's own words.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None,
        log: logging.Logger,
        stdin: int | IO | None = subprocess.DEVNULL,
        stdout: int | IO | None = subprocess.PIPE,
        tail_lines: int = 20,
        stderr_level: int = logging.INFO,
    ) -> None:
        self.argv = list(argv)
        self.log = log
        self.stderr_level = stderr_level
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(env) if env is not None else None,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._pump = threading.Thread(target=self._pump_stderr, name=f"stderr:{self.argv[0]}", daemon=True)
        self._pump.start()

    @property
    def name(self) -> str:
        return os.path.basename(self.argv[0])

    @property
    def stdin(self) -> IO[bytes] | None:
        return self.proc.stdin

    @property
    def stdout(self) -> IO[bytes] | None:
        return self.proc.stdout

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def stderr_tail(self) -> str:
        self._pump.join(timeout=5)
        return "\n".join(self._tail)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", errors="backslashreplace").rstrip()
            if line:
                self._tail.append(line)
                self.log.log(self.stderr_level, "[%s] %s", self.name, line)
        self.proc.stderr.close()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit; on timeout the whole group is killed and ``TimeoutError`` raised."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.terminate()
            raise TimeoutError(f"{self.name} did not finish within {timeout:.0f}s and was killed") from None
        self._pump.join(timeout=5)
        return code

    def terminate(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` seconds."""
        if self.proc.poll() is not None:
            return
        self.log.warning("Stopping %s (process group %s)", self.name, self.proc.pid)
        _signal_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.terminate()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
        if self.proc.poll() is None:
            self.proc.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


class ChildRegistry:
    """The children a long-lived object (a hook, an operator) has running, so ``on_kill`` can stop them all.

    The one way children are tracked: :meth:`start` a child, :meth:`forget` it once it
    has exited, and :meth:`terminate_all` (or :meth:`terminate`, the name
    :class:`StopsChildrenOnKill` calls) from any thread stops those running and
    refuses any started afterwards.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[ChildProcess] = set()
        self.cancelled = False

    def running(self) -> list[ChildProcess]:
        """The children started and not yet forgotten, as of now."""
        with self._lock:
            return list(self._live)

    def start(self, argv: Sequence[str], **kwargs) -> ChildProcess:
        with self._lock:
            if self.cancelled:
                raise ProcessCancelled(f"not starting {os.path.basename(argv[0])}: the task is being killed")
            child = ChildProcess(argv, **kwargs)
            self._live.add(child)
        return child

    def forget(self, child: ChildProcess) -> None:
        with self._lock:
            self._live.discard(child)

    def terminate_all(self) -> None:
        with self._lock:
            self.cancelled = True
            live = list(self._live)
        for child in live:
            child.terminate()

    terminate = terminate_all  # a registry is itself what an operator's ``_running`` may hold


class ProcessCancelled(RuntimeError):
    """Raised instead of starting a new child once ``terminate_all`` was called."""


# Guards every operator's (_running, _killed) pair: on_kill runs in another thread than execute.  One lock for all
# operators, held for two assignments: an operator is copied and pickled by Airflow, a lock of its own could not be.
_KILL_LOCK = threading.Lock()


class StopsChildrenOnKill:
    """Mixin for an Airflow operator whose work runs in child processes: ``on_kill`` stops them, and a kill is never a success.

    ``execute`` hands what it runs to :meth:`stoppable` (anything with ``terminate()``
    whose children go through a :class:`ChildRegistry`: a capture, a hook, a drill,
    a registry itself) and calls ``fail_if_killed()`` when it returns, because a
    child stopped by the kill may still exit 0 with half its work done.  Work handed
    over after the kill came is stopped at once (its registry then starts nothing).
    Kept here, free of Airflow, so the rclone provider and the backup operators share it.
    """

    _running = None
    _killed = False

    def stoppable(self, work):
        """Make ``work`` what ``on_kill`` stops, and return it."""
        with _KILL_LOCK:
            self._running = work
            killed = self._killed
        if killed:
            work.terminate()
        return work

    def on_kill(self) -> None:
        with _KILL_LOCK:
            self._killed = True
            running = self._running
        if running is not None:
            running.terminate()

    def fail_if_killed(self) -> None:
        if self._killed:
            raise ProcessCancelled(f"{getattr(self, 'task_id', 'the task')} was killed; its work is discarded")
