"""Scratch folders: a run killed with SIGKILL leaves its folder, and the next run removes it; a live run's stays."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chain_steps import execute, publish
from pgbackup.storage.scratch import LOCK, ROOT, scratch_dir

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
HOLDER = """
import sys
from pgbackup.storage.scratch import scratch_dir
with scratch_dir(sys.argv[1], "merge") as path:
    (path / "part.changed").write_bytes(b"x" * 1000)
    print(path, flush=True)
    sys.stdin.read()  # hold the folder until the test closes stdin (or kills this process)
"""


class Holder:
    """Another process holding a scratch folder of ``local_dir`` until it is released or killed."""

    def __init__(self, local_dir: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(PLUGINS)}
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(local_dir)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, text=True)
        self.path = Path(self.process.stdout.readline().strip())  # printed once the folder is made and locked
        assert self.path.is_dir(), "the holder did not take its folder"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL

    def release(self) -> None:
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0


def test_a_folder_left_by_a_process_killed_with_sigkill_is_removed_by_the_next_run(tmp_path):
    holder = Holder(tmp_path)
    holder.kill()
    assert holder.path.is_dir(), "SIGKILL runs no cleanup: the folder is left"
    with scratch_dir(tmp_path, "merge") as mine:
        assert not holder.path.exists()
        assert mine.is_dir()


def test_a_folder_of_a_live_process_is_kept(tmp_path):
    holder = Holder(tmp_path)
    try:
        with scratch_dir(tmp_path, "merge") as mine:
            assert mine != holder.path
            assert (holder.path / "part.changed").is_file()
        assert (holder.path / "part.changed").is_file()
    finally:
        holder.release()
    assert not holder.path.exists(), "the holder removes its own folder when it ends"


def test_folders_of_this_process_exclude_each_other_too(tmp_path):
    with scratch_dir(tmp_path, "merge") as outer:
        (outer / "x").write_bytes(b"x")
        with scratch_dir(tmp_path, "restore") as inner:
            assert (outer / "x").is_file() and inner.parent == outer.parent == tmp_path / ROOT
        assert not inner.exists()
    assert not outer.exists()


def test_a_folder_without_its_lock_file_is_removed(tmp_path):
    """Only a process that died between making a folder and locking it leaves one so (both happen under the sweep lock)."""
    (tmp_path / ROOT / "merge-0123456789abcdef").mkdir(parents=True)
    with scratch_dir(tmp_path, "merge"):
        assert not (tmp_path / ROOT / "merge-0123456789abcdef").exists()


def test_what_the_sweep_did_not_make_is_left_alone(tmp_path):
    """A database whose prefix is "tmp" keeps its local copies in the same folder: they are not scratch folders."""
    (tmp_path / ROOT / "full").mkdir(parents=True)
    (tmp_path / ROOT / "full" / "20261201T000000Z-full.dump.zst").write_bytes(b"x")
    with scratch_dir(tmp_path, "merge"):
        pass
    assert (tmp_path / ROOT / "full" / "20261201T000000Z-full.dump.zst").is_file()


def test_the_folder_is_removed_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError):
        with scratch_dir(tmp_path, "merge") as path:
            assert (path / LOCK).is_file()
            raise RuntimeError("the capture failed")
    assert not path.exists()


def test_a_purpose_that_is_not_a_plain_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="purpose"):
        with scratch_dir(tmp_path, "../up"):
            pass


def test_the_incremental_merges_in_a_scratch_folder_and_leaves_nothing(shop_db, capture, client):
    full = publish(capture.full(), client)
    execute(shop_db, "DELETE FROM payment WHERE id = (SELECT max(id) FROM payment)")
    stale = capture.local_dir / ROOT / "merge-00000000deadbeef"
    stale.mkdir(parents=True)
    assert capture.incremental(full).kind == "incremental"
    assert [p.name for p in (capture.local_dir / ROOT).iterdir() if p.is_dir()] == []
    assert not list(capture.local_dir.glob("pgbackup-merge-*"))
