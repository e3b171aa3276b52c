"""RcloneHook as Airflow uses it: the connection type it registers, the connection's fields becoming a
RemoteConfig, its delegations to the client, and ``test_connection`` (the UI's Test button and ``airflow
connections test``) run against real rclone remotes."""

import hashlib
import json
from pathlib import Path

import airflow
import jsonschema
import pytest

from rclone_provider.client import RemoteConfig, RemoteConfigError
from rclone_provider.get_provider_info import get_provider_info
from rclone_provider.hooks.rclone import RcloneHook


def connect(monkeypatch, conn_id: str, extra: dict, conn_type: str = "rclone", **hook_args) -> RcloneHook:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": conn_type, "extra": extra}))
    return RcloneHook(conn_id, **hook_args)


def test_the_connections_fields_become_the_remote_config(monkeypatch):
    extra = {"type": "crypt", "root": "Shop Backups", "options": {"password": "obscured", "filename_encryption": "off"},
             "directory_name_encryption": False, "flags": ["--bwlimit=1M"], "wraps": {"type": "s3", "root": "bucket", "region": "eu-west-1"}}
    config = connect(monkeypatch, "offsite_store", extra).remote_config()
    assert config == RemoteConfig(
        name="offsitestore", type="crypt", root="Shop Backups",
        options={"directory_name_encryption": False, "password": "obscured", "filename_encryption": "off"}, flags=("--bwlimit=1M",),
        wraps=RemoteConfig(name="offsitestorebase", type="s3", root="bucket", options={"region": "eu-west-1"}),
    )
    assert dict(config.options) == {"directory_name_encryption": False, "password": "obscured", "filename_encryption": "off"}
    assert config.env()["RCLONE_CONFIG_OFFSITESTORE_REMOTE"] == "offsitestorebase:bucket"


def test_a_connection_of_another_type_is_refused_naming_it(monkeypatch, tmp_path):
    hook = connect(monkeypatch, "warehouse", {"type": "local", "root": str(tmp_path)}, conn_type="postgres")
    with pytest.raises(RemoteConfigError, match="connection 'warehouse' has type 'postgres'; an rclone remote needs conn_type 'rclone'"):
        hook.remote_config()
    ok, message = hook.test_connection()
    assert not ok and "has type 'postgres'" in message


def test_the_hooks_delegations_reach_the_remote_through_one_client(monkeypatch, tmp_path):
    root = tmp_path / "remote"
    root.mkdir()
    hook = connect(monkeypatch, "shelf", {"type": "local", "root": str(root)})
    assert hook.get_conn() is hook.get_conn()
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"backup bytes" * 100)
    hook.upload_file(str(payload), "db/full/one.bin")
    assert (root / "db" / "full" / "one.bin").read_bytes() == payload.read_bytes()
    assert [(o.path, o.size) for o in hook.list_objects("db", recursive=True)] == [("db/full/one.bin", 1200)]
    assert hook.read_object("db/full/one.bin") == payload.read_bytes()
    assert hook.verify_object("db/full/one.bin", size=1200, sha256=hashlib.sha256(payload.read_bytes()).hexdigest())
    assert hook.storage_usage("db")["stored"]
    hook.delete_object("db/full/one.bin")
    assert hook.list_objects("db", recursive=True) == []


def test_connection_test_fails_without_an_rclone_to_run(monkeypatch, tmp_path):
    monkeypatch.delenv("RCLONE_BINARY", raising=False)
    monkeypatch.setattr("rclone_provider.client.sys.executable", str(tmp_path / "no-python"))
    monkeypatch.setattr("rclone_provider.client.shutil.which", lambda name: None)
    ok, message = connect(monkeypatch, "shelf", {"type": "local", "root": str(tmp_path)}, rclone_binary=str(tmp_path / "missing")).test_connection()
    assert not ok and message.startswith("rclone not found")


def test_the_generic_provider_carries_no_project_name():
    assert RcloneHook.default_conn_name == "rclone_default"
    assert (RcloneHook.conn_type, RcloneHook.hook_name, RcloneHook.conn_name_attr) == ("rclone", "Rclone", "rclone_conn_id")


def test_provider_info_is_what_airflow_accepts():
    info = get_provider_info()
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    (connection,) = info["connection-types"]
    assert connection["hook-class-name"] == "rclone_provider.hooks.rclone.RcloneHook"
    assert connection["connection-type"] == RcloneHook.conn_type
    assert set(connection["conn-fields"]) == {"type", "root", "options"}
    assert "get_ui_field_behaviour" not in RcloneHook.__dict__, "declared in get_provider_info, as Airflow 3.2+ wants it"


def test_connection_test_lists_the_root(monkeypatch, tmp_path):
    root = tmp_path / "remote root"
    root.mkdir()
    (root / "one").write_bytes(b"1")
    (root / "two").write_bytes(b"2")
    ok, message = connect(monkeypatch, "shelf", {"type": "local", "root": str(root)}).test_connection()
    assert ok, message
    assert message == f"shelf:{root}: listed the root, 2 file(s) at its top level"


def test_connection_test_fails_for_a_missing_root(monkeypatch, tmp_path):
    root = tmp_path / "not there"
    ok, message = connect(monkeypatch, "shelf", {"type": "local", "root": str(root)}).test_connection()
    assert not ok
    assert message == f"shelf:{root}: the root does not exist on this local remote; create it or correct 'root'"


def test_connection_test_fails_for_an_unknown_backend(monkeypatch, tmp_path):
    ok, message = connect(monkeypatch, "shelf", {"type": "lokal", "root": str(tmp_path)}).test_connection()
    assert not ok and "unknown rclone backend type 'lokal'" in message


def test_the_forms_backend_options_reach_rclone(monkeypatch, webdav_server):
    """What the form's "Backend options" field stores (``options``) configures the backend, like flat keys do."""
    (webdav_server.directory / "Shop Backups").mkdir(parents=True)
    hook = connect(monkeypatch, "dav", {"type": "webdav", "root": "Shop Backups", "options": {"url": webdav_server.url}})
    ok, message = hook.test_connection()
    assert ok, message
    without_url = connect(monkeypatch, "dav2", {"type": "webdav", "root": "Shop Backups", "options": None})
    assert not without_url.test_connection()[0]


def test_a_backend_option_given_twice_is_refused(monkeypatch, webdav_server):
    hook = connect(monkeypatch, "dav", {"type": "webdav", "url": webdav_server.url, "options": {"url": webdav_server.url}})
    ok, message = hook.test_connection()
    assert not ok and "backend option(s) url given both in 'options' and beside it" in message


@pytest.mark.parametrize("options", ["url=http://x", ["url"]])
def test_options_must_be_an_object(monkeypatch, options):
    ok, message = connect(monkeypatch, "dav", {"type": "webdav", "options": options}).test_connection()
    assert not ok and "'options' must be a JSON object" in message
