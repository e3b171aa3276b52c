from pathlib import Path

import pytest

from pgbackup.postgres.target import (
    PgTarget,
    PgTools,
    SourceError,
    ToolVersionError,
    choose_tools,
    installed_tools,
)


def tools(major):
    return PgTools(bin_dir=Path(f"/usr/lib/postgresql/{major}/bin"), major=major, version=f"{major}.1")


def test_the_servers_own_major_version_is_preferred():
    assert choose_tools([tools(17), tools(15), tools(16)], 15).major == 15


def test_the_closest_newer_client_is_taken_when_the_same_major_is_missing():
    assert choose_tools([tools(17), tools(14), tools(16)], 15).major == 16


def test_a_server_newer_than_every_client_is_refused_with_what_to_install():
    with pytest.raises(ToolVersionError, match="install postgresql-client-17"):
        choose_tools([tools(15), tools(16)], 17)


def test_the_installed_client_is_found_and_reads_its_version():
    found = installed_tools()
    assert found and all(t.major >= 13 and Path(t.pg_dump).is_file() for t in found)


def test_url_parsing_keeps_password_out_of_repr_and_description():
    target = PgTarget.from_url("postgresql://shop:p%40ss:w0rd@db.example:6543/vendure?sslmode=require")
    assert (target.user, target.password, target.host, target.port, target.dbname) == ("shop", "p@ss:w0rd", "db.example", 6543, "vendure")
    assert target.options == {"sslmode": "require"}
    assert "w0rd" not in repr(target) and "w0rd" not in target.describe()


def test_libpq_env_uses_a_private_passfile_never_pgpassword():
    target = PgTarget.from_url("postgresql://shop:se:cr\\et@127.0.0.1:5432/vendure")
    with target.libpq_env({"PGPASSWORD": "leak"}) as env:
        passfile = Path(env["PGPASSFILE"])
        assert "PGPASSWORD" not in env
        assert oct(passfile.stat().st_mode & 0o777) == "0o600"
        assert passfile.read_text() == "127.0.0.1:5432:*:shop:se\\:cr\\\\et\n"
    assert not passfile.exists()


def test_a_refused_login_gives_one_clear_line(make_database):
    target = make_database("pw")
    # The test server trusts every local login, so a wrong password cannot be shown here;
    # an unknown role is refused through the same path.
    bad = PgTarget(dbname=target.dbname, user="no_such_role_x", password="whatever")
    with pytest.raises(SourceError, match=r"cannot connect to no_such_role_x@127.0.0.1:5432/.*no_such_role_x"):
        bad.server_version()


def test_missing_database_is_named(make_database):
    with pytest.raises(SourceError, match='database "pgb_nope" does not exist'):
        PgTarget(dbname="pgb_nope").server_version()
