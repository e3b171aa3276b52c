from datetime import timedelta
from pathlib import Path

import pytest
from pgbackup.settings import BackupSettings, SettingsError


def test_defaults_match_the_product_brief():
    s = BackupSettings.from_env({})
    assert (s.full_schedule, s.incremental_schedule, s.timezone) == ("0 2 * * 0", "0 0,6,12,18 * * *", "UTC")
    assert s.remote_policy().full_max_age == timedelta(weeks=8)
    assert s.remote_policy().incremental_max_age == timedelta(days=7)
    assert s.local_policy().full_max_age == timedelta(weeks=2)
    assert s.local_policy().incremental_max_age == timedelta(days=3)
    assert (s.source_conn_id, s.remote_conn_id, s.prefix) == ("backup_source", "backup_remote", "database")


def test_every_value_can_be_set_from_the_environment():
    s = BackupSettings.from_env(
        {
            "BACKUP_TIMEZONE": "Europe/Berlin", "BACKUP_PREFIX": "/shop/db/", "BACKUP_REMOTE_FULL_RETENTION": "12w",
            "BACKUP_LOCAL_INCREMENTAL_RETENTION": "36h", "BACKUP_LOCAL_DIR": "/srv/pgb", "BACKUP_ZSTD_LEVEL": "7",
            "BACKUP_SOURCE_CONN_ID": "shop_db", "BACKUP_ALERT_EMAILS": "ops@example.com, cto@example.com",
        }
    )
    assert s.timezone == "Europe/Berlin" and s.prefix == "shop/db"
    assert s.remote_full_retention == timedelta(weeks=12) and s.local_incremental_retention == timedelta(hours=36)
    assert s.local_dir == Path("/srv/pgb") and s.zstd_level == 7 and s.source_conn_id == "shop_db"
    assert s.alert_emails == ("ops@example.com", "cto@example.com")


@pytest.mark.parametrize(
    "name, value",
    [
        ("BACKUP_TIMEZONE", "Mars/Olympus"),
        ("BACKUP_REMOTE_FULL_RETENTION", "eight weeks"),
        ("BACKUP_ZSTD_LEVEL", "99"),
        ("BACKUP_MIN_FULLS", "0"),
        ("BACKUP_PREFIX", "../escape"),
        ("BACKUP_TASK_RETRIES", "two"),
    ],
)
def test_bad_values_fail_with_the_variable_named(name, value):
    with pytest.raises(SettingsError) as err:
        BackupSettings.from_env({name: value})
    assert name in str(err.value)
