"""Operators that each do one rclone action: upload a file, verify a stored object, delete objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from rclone_provider.child_process import StopsChildrenOnKill
from rclone_provider.hooks.rclone import RcloneHook


class _RcloneOperator(StopsChildrenOnKill, BaseOperator):
    """Shared plumbing: one hook per task, ``on_kill`` stops its rclone, a kill is never a success."""

    def __init__(self, *, rclone_conn_id: str = RcloneHook.default_conn_name, rclone_binary: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rclone_conn_id = rclone_conn_id
        self.rclone_binary = rclone_binary

    @property
    def hook(self) -> RcloneHook:
        if self._running is None:
            self._running = RcloneHook(self.rclone_conn_id, rclone_binary=self.rclone_binary)
        return self._running


class RcloneUploadOperator(_RcloneOperator):
    """Upload ``local_path`` to ``remote_path`` (relative to the connection's root).

    Returns ``{"remote_path", "size"}`` for downstream tasks.
    """

    template_fields: Sequence[str] = ("local_path", "remote_path", "rclone_conn_id")

    def __init__(self, *, local_path: str, remote_path: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.local_path = local_path
        self.remote_path = remote_path

    def execute(self, context) -> dict[str, Any]:
        stored = self.hook.upload_file(self.local_path, self.remote_path)
        self.fail_if_killed()
        return {"remote_path": stored.path, "size": stored.size}


class RcloneVerifyOperator(_RcloneOperator):
    """Fail unless the object at ``remote_path`` has exactly ``expected_size`` bytes and ``expected_sha256``."""

    template_fields: Sequence[str] = ("remote_path", "expected_size", "expected_sha256", "rclone_conn_id")

    def __init__(self, *, remote_path: str, expected_size: int | str, expected_sha256: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.remote_path = remote_path
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256

    def execute(self, context) -> dict[str, Any]:
        method = self.hook.verify_object(self.remote_path, size=int(self.expected_size), sha256=str(self.expected_sha256))
        self.fail_if_killed()
        return {"remote_path": self.remote_path, "method": method}


class RcloneDeleteOperator(_RcloneOperator):
    """Delete each object in ``remote_paths``; objects already gone are fine."""

    template_fields: Sequence[str] = ("remote_paths", "rclone_conn_id")

    def __init__(self, *, remote_paths: Sequence[str] | str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.remote_paths = remote_paths

    def execute(self, context) -> list[str]:
        paths = [self.remote_paths] if isinstance(self.remote_paths, str) else list(self.remote_paths)
        for path in paths:
            self.hook.delete_object(path)
            self.log.info("Deleted %s", path)
        self.fail_if_killed()
        return paths
