import re
from datetime import timedelta
from pathlib import Path

import pytest

from pgbackup.config.settings import BackupSettings, SettingsError


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
        ("BACKUP_FULL_SCHEDULE", "every sunday"),
        ("BACKUP_INCREMENTAL_SCHEDULE", "61 * * * *"),
        ("BACKUP_DRILL_SCHEDULE", "* * *"),
    ],
)
def test_bad_values_fail_with_the_variable_named(name, value):
    with pytest.raises(SettingsError) as err:
        BackupSettings.from_env({name: value})
    assert name in str(err.value)


def test_one_database_by_default_named_after_its_folder():
    s = BackupSettings.from_env({"BACKUP_SOURCE_CONN_ID": "shop_db"})
    assert [(d.name, d.conn_id, d.prefix) for d in s.databases] == [("database", "shop_db", "database")]
    assert s.database(None) == s.databases[0]


def test_several_databases_each_with_its_connection_and_folder():
    s = BackupSettings.from_env({"BACKUP_DATABASES": " shop=shop_source, blog = blog_source ,"})
    assert [(d.name, d.conn_id, d.prefix) for d in s.databases] == [("shop", "shop_source", "shop"), ("blog", "blog_source", "blog")]
    blog = s.for_database(s.database("blog"))
    assert (blog.source_conn_id, blog.prefix, blog.databases) == ("blog_source", "blog", (s.databases[1],))
    assert blog.remote_conn_ids == s.remote_conn_ids and blog.local_dir == s.local_dir


def test_choosing_among_several_databases_needs_a_known_name():
    s = BackupSettings.from_env({"BACKUP_DATABASES": "shop=a,blog=b"})
    with pytest.raises(SettingsError, match=r"several databases are configured \(shop, blog\): choose one with --database"):
        s.database(None)
    with pytest.raises(SettingsError, match="no database called 'crm'; configured: shop, blog"):
        s.database("crm")


@pytest.mark.parametrize(
    "env, message",
    [
        ({"BACKUP_DATABASES": "shop"}, "'shop' must be name=connection_id"),
        ({"BACKUP_DATABASES": "shop=a,shop=b"}, "'shop' is named twice"),
        ({"BACKUP_DATABASES": "../x=a"}, "'../x' is not a usable name"),
        ({"BACKUP_DATABASES": "a b=a"}, "'a b' is not a usable name"),
        ({"BACKUP_DATABASES": " , "}, "names no database"),
        ({"BACKUP_DATABASES": "shop=a", "BACKUP_PREFIX": "database"}, "BACKUP_PREFIX and BACKUP_DATABASES are both set"),
        ({"BACKUP_DATABASES": "shop=a", "BACKUP_SOURCE_CONN_ID": "x"}, "BACKUP_SOURCE_CONN_ID and BACKUP_DATABASES are both set"),
    ],
)
def test_bad_database_lists_are_refused_with_the_reason(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        BackupSettings.from_env(env)
