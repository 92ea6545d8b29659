"""Where PostgreSQL comes from: the mode DOKUEN_POSTGRES comes to, its programs, and the
messages that name the package to install."""

from pathlib import Path

import pytest

from dokuen.data.cluster import PostgresUnavailable
from dokuen.data.postgres import Postgres, choose_mode, find_bindir, has_server, not_installed
from dokuen.settings import load_settings
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.spawn import OsSpawner


@pytest.mark.parametrize(
    ("setting", "url", "server", "expected"),
    [
        ("auto", None, True, ("managed", None)),
        ("auto", None, False, ("off", "not installed")),
        ("auto", "postgres://a@h/d", False, ("external", None)),
        ("managed", None, True, ("managed", None)),
        ("managed", None, False, ("managed", "not installed")),
        ("external", "postgres://a@h/d", False, ("external", None)),
        ("off", None, True, ("off", None)),
    ],
)
def test_choose_mode(
    setting: str, url: str | None, server: bool, expected: tuple[str, str | None]
) -> None:
    assert choose_mode(setting, url, server) == expected


def fake_bindir(directory: Path, *programs: str) -> Path:
    directory.mkdir(parents=True)
    for name in programs:
        (directory / name).write_text("#!/bin/sh\n")
        (directory / name).chmod(0o755)
    return directory


def test_a_configured_bindir(tmp_path: Path) -> None:
    full = fake_bindir(tmp_path / "full", "initdb", "postgres", "pg_dump", "pg_restore", "psql")
    client = fake_bindir(tmp_path / "client", "pg_dump", "pg_restore", "psql")
    empty = fake_bindir(tmp_path / "empty")
    assert find_bindir(str(full)) == full
    assert has_server(full)
    assert find_bindir(str(client)) == client
    assert not has_server(client)
    assert find_bindir(str(empty)) is None
    assert not has_server(None)


def test_missing_postgresql_names_the_debian_package(tmp_path: Path) -> None:
    message = not_installed(None, None, server=True)
    assert "PostgreSQL is not installed (no initdb, postgres)" in message
    assert "apt install postgresql" in message
    client = fake_bindir(tmp_path / "client", "pg_dump")
    message = not_installed(client, str(client), server=False)
    assert f"PostgreSQL is not in DOKUEN_POSTGRES_BIN={client} (no pg_restore, psql)" in message
    assert "apt install postgresql-client" in message


def daemon_postgres(tmp_path: Path, **environ: str) -> Postgres:
    settings = load_settings(environ, tmp_path)
    return Postgres(settings, OsSpawner(), LogMux(tmp_path / "log", 1 << 20, 1))


@pytest.mark.anyio
async def test_what_each_mode_answers_without_a_server(tmp_path: Path) -> None:
    empty = fake_bindir(tmp_path / "empty")
    off = daemon_postgres(tmp_path, DOKUEN_POSTGRES="off")
    with pytest.raises(PostgresUnavailable, match=r"PostgreSQL is off \(DOKUEN_POSTGRES=off\)"):
        await off.admin()
    assert off.status() == {"mode": "off", "problem": None, "reason": None}

    auto = daemon_postgres(tmp_path, DOKUEN_POSTGRES_BIN=str(empty))
    assert auto.status()["mode"] == "off"
    assert "apt install postgresql" in auto.status()["reason"]
    assert auto.status()["problem"] is None  # off is what auto chose: nothing to fix

    managed = daemon_postgres(tmp_path, DOKUEN_POSTGRES="managed", DOKUEN_POSTGRES_BIN=str(empty))
    with pytest.raises(PostgresUnavailable, match=r"apt install postgresql\)"):
        await managed.admin()
    assert "apt install postgresql" in managed.status()["problem"]

    url = "postgres://admin:hunter2@db.example:6543/postgres?sslmode=require"
    external = daemon_postgres(tmp_path, DOKUEN_POSTGRES_URL=url, DOKUEN_POSTGRES_BIN=str(empty))
    assert external.status() == {"mode": "external", "problem": None, "server": "db.example:6543"}
    admin = await external.admin()
    assert (admin.user, admin.password, admin.dbname) == ("admin", "hunter2", "postgres")
    app = external.public("app_blog", "pw", "app_blog", tmp_path / "apps" / "blog")
    assert app.url() == "postgres://app_blog:pw@db.example:6543/app_blog?sslmode=require"
    with pytest.raises(PostgresUnavailable, match=r"apt install postgresql-client\)"):
        external.tool("pg_dump")
