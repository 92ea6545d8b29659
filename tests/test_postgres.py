"""Where PostgreSQL comes from: the mode DOKUEN_POSTGRES comes to, its programs, and the
messages that name the package to install."""

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from dokuen.postgres import choose_mode, find_bindir, has_server, not_installed, unreachable_parent


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


@pytest.mark.skipif(os.geteuid() != 0, reason="needs another user to look through")
def test_unreachable_parent() -> None:
    nobody = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="dokuen-reach-"))  # pytest's own are closed to others
    try:
        top.chmod(0o755)
        closed = top / "closed"
        (closed / "inner").mkdir(parents=True)
        closed.chmod(0o700)
        assert unreachable_parent(closed / "inner" / "run", nobody) == closed
        closed.chmod(0o711)  # passing through is enough
        assert unreachable_parent(closed / "inner" / "run", nobody) is None
    finally:
        shutil.rmtree(top)
