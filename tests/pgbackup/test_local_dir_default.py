"""Where local copies go by default: the user's data folder, never a path derived from where the package is installed."""

from pathlib import Path

from pgbackup.config.settings import BackupSettings


def test_the_default_local_folder_is_under_the_users_data_home():
    settings = BackupSettings.from_env({"HOME": "/home/ops", "XDG_DATA_HOME": "/data/ops"})
    assert settings.local_dir == Path("/data/ops/pgbackup/backups")


def test_without_xdg_data_home_it_is_under_dot_local_share(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert BackupSettings.from_env({}).local_dir == tmp_path / ".local" / "share" / "pgbackup" / "backups"


def test_the_default_does_not_depend_on_where_the_package_is_installed():
    import pgbackup

    installed_at = Path(pgbackup.__file__).resolve().parents[1]
    assert not BackupSettings.from_env({"XDG_DATA_HOME": "/data/ops"}).local_dir.is_relative_to(installed_at.parent)


def test_backup_local_dir_wins_and_expands_the_home():
    assert BackupSettings.from_env({"BACKUP_LOCAL_DIR": "/srv/copies", "XDG_DATA_HOME": "/data/ops"}).local_dir == Path("/srv/copies")
    assert BackupSettings.from_env({"BACKUP_LOCAL_DIR": "~/copies"}).local_dir == Path.home() / "copies"
