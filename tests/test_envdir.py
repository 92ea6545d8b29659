"""Table tests for app config stored as a daemontools envdir."""

from pathlib import Path

import pytest

from dokuen.errors import InvalidName
from dokuen.supervise.envdir import read_envdir, write_envdir

VALUES = {
    "SIMPLE": "1",
    "URL": "postgres://u:p@localhost/db?x=1&y=2",
    "MULTI": "line one\nline two",
    "TRAILING": "ends with newline\n",
    "NEWLINES": "\n\n",
    "EMPTY": "",
    "SPACES": "  padded  ",
    "UNICODE": "héllo ☃",
    "lower_case": "ok",
}


@pytest.mark.parametrize(("key", "value"), VALUES.items())
def test_round_trip_one(tmp_path: Path, key: str, value: str) -> None:
    write_envdir(tmp_path / "env", {key: value})
    assert read_envdir(tmp_path / "env") == {key: value}


def test_round_trip_all(tmp_path: Path) -> None:
    write_envdir(tmp_path / "apps" / "blog" / "env", VALUES)
    assert read_envdir(tmp_path / "apps" / "blog" / "env") == VALUES


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("plain", b"plain"),
        ("a\nb", b"a\0b"),
        ("trailing\n", b"trailing\0"),
        ("é", "é".encode()),
    ],
)
def test_written_as_envdir_files(tmp_path: Path, value: str, stored: bytes) -> None:
    write_envdir(tmp_path, {"KEY": value})
    assert (tmp_path / "KEY").read_bytes() == stored
    assert [entry.name for entry in tmp_path.iterdir()] == ["KEY"]  # no temporary left behind


@pytest.mark.parametrize(
    ("content", "value"),
    [
        pytest.param(b"value", "value", id="plain"),
        pytest.param(b"value\n", "value", id="editor-newline-dropped"),
        pytest.param(b"value\n\n", "value\n", id="only-one-newline-dropped"),
        pytest.param(b"a\0b", "a\nb", id="nul-is-newline"),
        pytest.param(b"a\nb\n", "a\nb", id="real-newlines-kept"),
        pytest.param(b"", "", id="empty"),
        pytest.param(b" x ", " x ", id="spaces-kept"),
    ],
)
def test_read_files_people_write(tmp_path: Path, content: bytes, value: str) -> None:
    (tmp_path / "KEY").write_bytes(content)
    assert read_envdir(tmp_path) == {"KEY": value}


def test_read_skips_dotfiles_and_directories(tmp_path: Path) -> None:
    (tmp_path / "A").write_text("1")
    (tmp_path / ".A.tmp").write_text("half-written")
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "SUBDIR").mkdir()
    assert read_envdir(tmp_path) == {"A": "1"}


def test_read_missing_directory_is_empty(tmp_path: Path) -> None:
    assert read_envdir(tmp_path / "nosuch") == {}


def test_not_utf8_survives_a_round_trip(tmp_path: Path) -> None:
    (tmp_path / "RAW").write_bytes(b"caf\xe9")
    config = read_envdir(tmp_path)
    write_envdir(tmp_path / "copy", config)
    assert (tmp_path / "copy" / "RAW").read_bytes() == b"caf\xe9"


def test_set_replaces_and_unset_removes(tmp_path: Path) -> None:
    write_envdir(tmp_path, {"A": "1", "B": "2", "C": "3"})
    write_envdir(tmp_path, {"A": "one"}, ["B", "NEVER_SET"])
    assert read_envdir(tmp_path) == {"A": "one", "C": "3"}
    write_envdir(tmp_path, {}, ["A", "C"])
    assert read_envdir(tmp_path) == {}


@pytest.mark.parametrize("key", ["", "1A", "A-B", "A B", "../A", ".A", "A/B", "A\n"])
def test_invalid_key_set(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidName, match=r"^invalid config key "):
        write_envdir(tmp_path / "env", {key: "x"})
    assert read_envdir(tmp_path / "env") == {}
    assert not (tmp_path / "A").exists()


@pytest.mark.parametrize("key", ["../SECRET", "1A", ""])
def test_invalid_key_unset(tmp_path: Path, key: str) -> None:
    (tmp_path / "SECRET").write_text("keep me")
    with pytest.raises(InvalidName):
        write_envdir(tmp_path / "env", {}, [key])
    assert (tmp_path / "SECRET").read_text() == "keep me"


def test_a_nul_byte_in_a_value_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(InvalidName, match="NUL byte"):
        write_envdir(tmp_path / "env", {"GOOD": "1", "BAD": "a\0b"})
    assert read_envdir(tmp_path / "env") == {}
