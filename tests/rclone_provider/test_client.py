"""The rclone client against real rclone: a local-directory remote and a WebDAV server on loopback."""

import hashlib
import os
import subprocess
import threading
import time

import pytest

from rclone_provider.client import ObjectExists, Rclone, RcloneError, RemoteConfig, VerificationError


@pytest.fixture
def payload(tmp_path):
    path = tmp_path / "dump file ü.bin"
    data = os.urandom(300_000)
    path.write_bytes(data)
    return path, len(data), hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "webdav"])
def remote(request, local_remote):
    if request.param == "local":
        return local_remote
    return request.getfixturevalue("webdav_remote")


def test_upload_list_read_and_delete_round_trip(remote, payload):
    path, size, sha = payload
    client = Rclone(remote)
    client.upload(path, "database/full/a b ü.dump.zst")
    client.put_bytes(b'{"x": 1}', "database/full/a b ü.manifest.json")
    listed = {o.path: o.size for o in client.list("database", recursive=True)}
    assert listed == {"database/full/a b ü.dump.zst": size, "database/full/a b ü.manifest.json": 8}
    assert client.read_bytes("database/full/a b ü.manifest.json") == b'{"x": 1}'
    assert client.usage("database") == {"count": 2, "bytes": size + 8}
    client.delete("database/full/a b ü.dump.zst")
    client.delete("database/full/a b ü.dump.zst")  # already gone: not an error
    assert [o.path for o in client.list("database", recursive=True)] == ["database/full/a b ü.manifest.json"]


def test_an_upload_never_overwrites_another_object_and_a_retried_one_is_fine(remote, payload, tmp_path):
    path, size, sha = payload
    client = Rclone(remote)
    client.upload(path, "database/full/x.dump.zst")
    client.upload(path, "database/full/x.dump.zst")  # the same file again (a retried task): nothing to do
    stranger = tmp_path / "another writer's dump"
    stranger.write_bytes(os.urandom(size))
    with pytest.raises(ObjectExists, match="already holds a different object .* nothing was overwritten"):
        client.upload(stranger, "database/full/x.dump.zst")
    assert client.verify("database/full/x.dump.zst", size=size, sha256=sha)


def test_listing_a_folder_that_does_not_exist_is_empty(remote):
    assert Rclone(remote).list("nothing/here") == []
    assert Rclone(remote).stat("nothing/here.txt") is None


def test_verify_uses_the_remote_sha256_where_the_backend_has_one(local_remote, payload):
    path, size, sha = payload
    client = Rclone(local_remote)
    client.upload(path, "x/obj")
    assert client.verify("x/obj", size=size, sha256=sha) == "remote sha256"


def test_verify_downloads_and_hashes_where_the_backend_has_no_sha256(webdav_remote, payload):
    path, size, sha = payload
    client = Rclone(webdav_remote)
    client.upload(path, "x/obj")
    assert client.verify("x/obj", size=size, sha256=sha) in ("download and sha256", "remote sha256")


def _flip_byte_on_disk(file_path):
    data = bytearray(file_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file_path.write_bytes(bytes(data))


def test_verify_fails_when_the_stored_object_was_altered(local_remote, payload):
    path, size, sha = payload
    client = Rclone(local_remote)
    client.upload(path, "database/full/obj.dump.zst")
    _flip_byte_on_disk(__import__("pathlib").Path(local_remote.root) / "database/full/obj.dump.zst")
    with pytest.raises(VerificationError, match="does not match"):
        client.verify("database/full/obj.dump.zst", size=size, sha256=sha)


def test_verify_fails_over_webdav_when_the_stored_object_was_altered(webdav_server, webdav_remote, payload):
    path, size, sha = payload
    client = Rclone(webdav_remote)
    client.upload(path, "obj.dump.zst")
    _flip_byte_on_disk(webdav_server.directory / "Shop Backups" / "obj.dump.zst")
    with pytest.raises(VerificationError, match="does not match"):
        client.verify("obj.dump.zst", size=size, sha256=sha)


def test_verify_fails_on_size_and_on_a_missing_object(local_remote, payload):
    path, size, sha = payload
    client = Rclone(local_remote)
    client.upload(path, "obj")
    with pytest.raises(VerificationError, match="remote size"):
        client.verify("obj", size=size + 1, sha256=sha)
    with pytest.raises(VerificationError, match="not found"):
        client.verify("missing", size=size, sha256=sha)


def test_a_dead_server_gives_an_error_with_rclones_words(webdav_server, webdav_remote, payload):
    path, _, _ = payload
    webdav_server.stop()
    client = Rclone(RemoteConfig.from_extra("backup_remote", {"type": "webdav", "url": webdav_server.url, "flags": ["--retries=1", "--low-level-retries=1"]}))
    with pytest.raises(RcloneError) as err:
        client.upload(path, "obj")
    assert err.value.code != 0
    assert "connection refused" in str(err.value).lower()


def test_remote_options_never_reach_the_command_line(local_remote, payload, monkeypatch):
    seen = []
    real_popen = subprocess.Popen

    def spy(argv, *a, **kw):
        seen.append(list(argv))
        return real_popen(argv, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", spy)
    secret_remote = RemoteConfig.from_extra("backup_remote", {"type": "local", "root": local_remote.root, "description": "s3cr3t-value"})
    Rclone(secret_remote).upload(payload[0], "obj")
    assert seen and all("s3cr3t-value" not in " ".join(argv) for argv in seen)


def test_terminate_stops_a_running_transfer(local_remote, tmp_path):
    big = tmp_path / "big"
    with open(big, "wb") as out:
        out.truncate(200 * 1024 * 1024)
    slow = RemoteConfig.from_extra("backup_remote", {"type": "local", "root": local_remote.root, "flags": ["--bwlimit=1M"]})
    client = Rclone(slow)
    errors = []
    worker = threading.Thread(target=lambda: errors.append(pytest.raises(RcloneError, client.upload, big, "big")))
    started = time.monotonic()
    worker.start()
    time.sleep(1.5)
    client.terminate()
    worker.join(timeout=20)
    assert not worker.is_alive() and time.monotonic() - started < 20
    assert errors, "the killed upload must raise, not return"


def test_a_remote_answering_503_for_a_while_is_retried_until_it_works(webdav_server, payload):
    from loopback import FlakyProxy

    path, size, sha = payload
    proxy = FlakyProxy(webdav_server.url, failures=4)
    try:
        client = Rclone(RemoteConfig.from_extra("backup_remote", {"type": "webdav", "url": proxy.url, "root": "r",
                                                                    "flags": ["--retries=3", "--low-level-retries=10", "--retries-sleep=100ms"]}))
        client.upload(path, "obj")
        assert client.verify("obj", size=size, sha256=sha) in ("download and sha256", "remote sha256")
    finally:
        proxy.stop()
    assert proxy.failed == 4 and proxy.forwarded > 0


def test_a_remote_that_keeps_failing_gives_up_in_bounded_time_with_a_clear_error(webdav_server, payload):
    from loopback import FlakyProxy

    path, _, _ = payload
    proxy = FlakyProxy(webdav_server.url, failures=10_000, status=503)
    started = time.monotonic()
    try:
        client = Rclone(RemoteConfig.from_extra("backup_remote", {"type": "webdav", "url": proxy.url,
                                                                    "flags": ["--retries=2", "--low-level-retries=2", "--retries-sleep=100ms"]}))
        with pytest.raises(RcloneError) as err:
            client.upload(path, "obj")
    finally:
        proxy.stop()
    assert time.monotonic() - started < 60
    assert "503" in str(err.value) or "try again later" in str(err.value) or "Service Unavailable" in str(err.value)
