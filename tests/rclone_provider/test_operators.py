"""The rclone operators outside a DAG run: a kill stops rclone and the task fails, never succeeds."""

import json
import threading
import time

import pytest

from rclone_provider.child_process import StopsChildrenOnKill
from rclone_provider.client import RcloneError
from rclone_provider.operators.rclone import RcloneUploadOperator


def test_killing_an_upload_stops_rclone_and_fails_the_task(local_remote, tmp_path, monkeypatch):
    extra = {"type": "local", "root": local_remote.root, "flags": ["--bwlimit=1M"]}
    monkeypatch.setenv("AIRFLOW_CONN_RCLONE_DEFAULT", json.dumps({"conn_type": "rclone", "extra": extra}))
    big = tmp_path / "big"
    with open(big, "wb") as out:
        out.truncate(200 * 1024 * 1024)
    operator = RcloneUploadOperator(task_id="upload", local_path=str(big), remote_path="big")
    outcome = []

    def execute():
        try:
            outcome.append(operator.execute({}))
        except Exception as exc:
            outcome.append(exc)

    worker = threading.Thread(target=execute)
    started = time.monotonic()
    worker.start()
    deadline = time.monotonic() + 30
    def copying() -> bool:  # the transfer itself runs, not the existence check before it
        client = operator._running and operator._running._client
        return bool(client) and any(child.argv[1] == "copyto" for child in list(client.children._live))

    while not copying():
        assert worker.is_alive() and time.monotonic() < deadline, f"rclone never started: {outcome}"
        time.sleep(0.05)
    operator.on_kill()
    worker.join(timeout=20)
    assert not worker.is_alive() and time.monotonic() - started < 20, "on_kill must stop rclone at once, not after 200 MB at 1 MB/s"
    (result,) = outcome
    assert isinstance(result, RcloneError) and result.verb == "copyto", f"a killed upload ended with {result!r}"


class _Work:
    def __init__(self) -> None:
        self.terminated = False

    def terminate(self) -> None:
        self.terminated = True


def test_a_kill_after_the_child_exited_cleanly_still_fails():
    """A child stopped by the kill may exit 0 with half its work done: fail_if_killed turns that into a failure."""
    task = StopsChildrenOnKill()
    task._running = work = _Work()
    task.fail_if_killed()  # not killed: nothing happens
    task.on_kill()
    assert work.terminated
    with pytest.raises(RuntimeError, match="was killed; its work is discarded"):
        task.fail_if_killed()
