import pytest

from rclone_provider.client import RemoteConfig, RemoteConfigError


def test_options_become_rclone_config_environment_variables():
    remote = RemoteConfig.from_extra(
        "backup_remote", {"type": "drive", "root": "DamnedDesigns-Backups", "token": {"access_token": "t0k"}, "scope": "drive", "use_trash": False}
    )
    env = remote.env()
    assert env["RCLONE_CONFIG_BACKUPREMOTE_TYPE"] == "drive"
    assert env["RCLONE_CONFIG_BACKUPREMOTE_TOKEN"] == '{"access_token": "t0k"}'
    assert env["RCLONE_CONFIG_BACKUPREMOTE_USE_TRASH"] == "false"
    assert "RCLONE_CONFIG_BACKUPREMOTE_ROOT" not in env  # root is ours, not a backend option


def test_spec_joins_root_and_relative_path():
    assert RemoteConfig.from_extra("r", {"type": "drive", "root": "DamnedDesigns-Backups"}).spec("database/full/x") == "r:DamnedDesigns-Backups/database/full/x"
    assert RemoteConfig.from_extra("r", {"type": "local", "root": "/srv/b ü/"}).spec("/database") == "r:/srv/b ü/database"
    assert RemoteConfig.from_extra("r", {"type": "s3"}).spec("bucket/x") == "r:bucket/x"


def test_secrets_never_appear_in_repr():
    remote = RemoteConfig.from_extra("r", {"type": "webdav", "pass": "hunter2-obscured"})
    assert "hunter2" not in repr(remote)


def test_wrapped_remote_is_defined_too():
    remote = RemoteConfig.from_extra("backup_remote", {"type": "crypt", "password": "x", "wraps": {"type": "local", "root": "/srv"}})
    env = remote.env()
    assert env["RCLONE_CONFIG_BACKUPREMOTEBASE_TYPE"] == "local"
    assert env["RCLONE_CONFIG_BACKUPREMOTE_REMOTE"] == "backupremotebase:/srv"


@pytest.mark.parametrize(
    "extra, message",
    [({}, "no 'type'"), ({"type": "floppy"}, "unknown rclone backend type 'floppy'"), ({"type": "s3", "flags": "--fast"}, "list of rclone flags")],
)
def test_bad_configuration_is_refused_with_what_to_fix(extra, message):
    with pytest.raises(RemoteConfigError, match=message):
        RemoteConfig.from_extra("backup_remote", extra)
