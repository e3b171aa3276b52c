import logging
import os
import signal
import subprocess
import time

import pytest

from rclone_provider.child_process import ChildProcess, ChildRegistry, ProcessCancelled, StopsChildrenOnKill

log = logging.getLogger("test")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_terminate_stops_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    child = ChildProcess(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], env=None, log=log, stdout=subprocess.DEVNULL)
    for _ in range(50):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    child.terminate(grace=5)
    assert child.proc.poll() is not None  # terminate returns once the child has exited
    deadline = time.monotonic() + 10
    while _alive(grandchild):  # not our child: its exit is seen in /proc
        assert time.monotonic() < deadline, "the grandchild outlived its process group's SIGTERM"
        time.sleep(0.05)


def test_stderr_is_streamed_to_the_log_and_kept_for_errors(caplog):
    with caplog.at_level(logging.INFO, logger="test"):
        child = ChildProcess(["sh", "-c", "echo first >&2; echo last words >&2; exit 3"], env=None, log=log, stdout=subprocess.DEVNULL)
        assert child.wait() == 3
    assert child.stderr_tail == "first\nlast words"
    assert "[sh] last words" in caplog.text


def test_wait_timeout_kills_and_raises():
    child = ChildProcess(["sleep", "30"], env=None, log=log, stdout=subprocess.DEVNULL)
    with pytest.raises(TimeoutError, match="killed"):
        child.wait(timeout=0.5)
    assert child.proc.poll() == -signal.SIGTERM


def test_registry_refuses_new_children_after_terminate_all():
    registry = ChildRegistry()
    child = registry.start(["sleep", "30"], env=None, log=log, stdout=subprocess.DEVNULL)
    registry.terminate_all()
    assert child.proc.poll() is not None
    with pytest.raises(ProcessCancelled):
        registry.start(["true"], env=None, log=log)


def test_a_registry_is_itself_terminable_and_lists_its_running_children():
    registry = ChildRegistry()
    child = registry.start(["sleep", "30"], env=None, log=log, stdout=subprocess.DEVNULL)
    assert registry.running() == [child]
    registry.terminate()  # the name StopsChildrenOnKill calls
    assert child.proc.poll() is not None and registry.cancelled
    registry.forget(child)
    assert registry.running() == []


class _Work:
    def __init__(self) -> None:
        self.terminations = 0

    def terminate(self) -> None:
        self.terminations += 1


def test_work_handed_over_after_the_kill_is_stopped_at_once():
    """on_kill came between two steps of execute: what the next step hands over must not run unstopped."""
    task = StopsChildrenOnKill()
    first = task.stoppable(_Work())
    task.on_kill()
    assert first.terminations == 1
    second = task.stoppable(_Work())
    assert second.terminations == 1
    with pytest.raises(ProcessCancelled, match="was killed"):
        task.fail_if_killed()
