"""Table tests for each app's database names and the record dokuend keeps of it."""

import stat
from pathlib import Path

import pytest

from dokuen.data.database import Database, database_name, read_record, remove_record, write_record
from dokuen.errors import InvalidName, SettingsError
from dokuen.store import AppDir


@pytest.mark.parametrize(
    ("app", "name"),
    [
        ("blog", "app_blog"),
        ("my-blog-2", "app_my_blog_2"),
        ("a" * 59, "app_" + "a" * 59),  # 63 bytes: PostgreSQL's longest name
        ("a" * 60, "app_" + "a" * 50 + "_11ee3912"),  # longer: cut, and a hash of it all
    ],
)
def test_database_name(app: str, name: str) -> None:
    assert database_name(app) == name
    assert len(name) <= 63


def test_long_names_stay_apart() -> None:
    assert database_name("a" * 60) != database_name("a" * 61)


@pytest.mark.parametrize("app", ["Blog", "blog_1", "x;drop", "-blog", ""])
def test_only_app_names_make_database_names(app: str) -> None:
    with pytest.raises(InvalidName):
        database_name(app)


def test_the_record_is_private_and_round_trips(tmp_path: Path) -> None:
    directory = AppDir(tmp_path / "blog")
    directory.root.mkdir()
    assert read_record(directory) is None
    record = Database.new("blog", "managed")
    assert record.name == "app_blog"
    assert len(record.password) >= 32
    assert record.password not in repr(record)
    write_record(directory, record)
    assert stat.S_IMODE(directory.database_file.stat().st_mode) == 0o600
    assert read_record(directory) == record
    remove_record(directory)
    assert read_record(directory) is None


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "[]",
        '{"app": "blog"}',
        '{"app": "b", "name": "x;y", "password": "p", "server": "managed", "created": "now"}',
    ],
)
def test_a_bad_record_is_named(tmp_path: Path, text: str) -> None:
    directory = AppDir(tmp_path)
    directory.database_file.write_text(text)
    with pytest.raises(SettingsError, match=r"database\.json: not a database record"):
        read_record(directory)
