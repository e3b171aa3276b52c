import logging
import os
import signal
import subprocess
import time

import pytest

from rclone_provider.child_process import ChildProcess, ChildRegistry, ProcessCancelled

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
    time.sleep(0.2)
    assert child.proc.poll() is not None
    assert not _alive(grandchild)


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
