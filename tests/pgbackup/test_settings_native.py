"""The settings of the Airflow-native features: staging targets, the capture pool, the remote's quota."""

import pytest

from pgbackup.config.settings import BackupSettings, SettingsError


def test_defaults_no_staging_target_a_two_slot_pool_and_the_remotes_own_quota():
    settings = BackupSettings.from_env({})
    assert settings.staging_conn_ids == () and (settings.pool, settings.pool_slots) == ("pgbackup", 2)
    assert settings.remote_quota_bytes is None


def test_staging_targets_pool_and_quota_are_read():
    settings = BackupSettings.from_env({"BACKUP_STAGING_CONN_IDS": "staging_shop, qa_shop", "BACKUP_POOL": "dumps",
                                        "BACKUP_POOL_SLOTS": "1", "BACKUP_REMOTE_QUOTA_BYTES": "1000000"})
    assert settings.staging_conn_ids == ("staging_shop", "qa_shop")
    assert (settings.pool, settings.pool_slots, settings.remote_quota_bytes) == ("dumps", 1, 1_000_000)


def test_a_pool_without_slots_is_refused_naming_the_variable():
    with pytest.raises(SettingsError, match="BACKUP_POOL_SLOTS=0: must be at least 1"):
        BackupSettings.from_env({"BACKUP_POOL_SLOTS": "0"})


def test_a_source_connection_is_never_a_staging_target():
    with pytest.raises(SettingsError, match="BACKUP_STAGING_CONN_IDS names 'src_shop', a backup source's connection"):
        BackupSettings.from_env({"BACKUP_DATABASES": "shop=src_shop", "BACKUP_STAGING_CONN_IDS": "staging, src_shop"})
    with pytest.raises(SettingsError, match="'backup_source'"):
        BackupSettings.from_env({"BACKUP_STAGING_CONN_IDS": "backup_source"})
