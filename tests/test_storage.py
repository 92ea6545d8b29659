"""The directory backup target: complete objects or none, keys that cannot climb out."""

from pathlib import Path

import pytest

from dokuen.backup.storage import DirectoryStorage, StorageError, sha256_of
from dokuen.backup.targets import open_storage


def test_a_directory_target_stores_lists_gets_and_deletes(tmp_path: Path) -> None:
    store = open_storage(f"file://{tmp_path}/backups", {})
    (tmp_path / "backups").mkdir()
    source = tmp_path / "dump"
    source.write_bytes(b"x" * 3_000_000)
    store.put("blog/db/1.dump", source, sha256_of(source))
    assert store.keys("blog/") == ["blog/db/1.dump"]
    assert store.keys("notes/") == []
    copy = tmp_path / "copy"
    store.get("blog/db/1.dump", copy)
    assert copy.read_bytes() == source.read_bytes()
    store.delete("blog/db/1.dump")
    store.delete("blog/db/1.dump")
    assert store.keys("") == []


def test_a_checksum_mismatch_stores_nothing(tmp_path: Path) -> None:
    store = DirectoryStorage("file:///x", tmp_path)
    source = tmp_path / "dump"
    source.write_bytes(b"data")
    with pytest.raises(StorageError, match="did not arrive whole"):
        store.put("blog/db/1.dump", source, "0" * 64)
    assert store.keys("") == ["dump"]  # only the source itself: no partial file is listed
    assert [p.name for p in (tmp_path / "blog/db").iterdir()] == []


def test_an_unwritable_or_missing_target_is_named(tmp_path: Path) -> None:
    store = DirectoryStorage("file:///nowhere", Path("/proc/nowhere"))
    source = tmp_path / "dump"
    source.write_bytes(b"data")
    with pytest.raises(StorageError, match=r"cannot write blog/db/1\.dump to file:///nowhere"):
        store.put("blog/db/1.dump", source, sha256_of(source))
    with pytest.raises(StorageError, match="no such directory"):
        store.keys("")
    with pytest.raises(StorageError, match=r"has no blog/db/2\.dump"):
        store.get("blog/db/2.dump", tmp_path / "out")


@pytest.mark.parametrize("key", ["../etc/passwd", "blog/../../x", "/abs", "blog//x", ".hidden"])
def test_keys_cannot_climb_out(tmp_path: Path, key: str) -> None:
    with pytest.raises(StorageError, match="invalid backup key"):
        DirectoryStorage("file:///x", tmp_path).delete(key)


@pytest.mark.parametrize("url", ["/srv/backups", "ftp://host/x", "file://host/x", "s3:///x"])
def test_unknown_targets_are_refused(url: str) -> None:
    with pytest.raises(StorageError, match="is not a backup target"):
        open_storage(url, {})


def test_a_delete_the_target_refuses_is_a_storage_error(tmp_path: Path) -> None:
    store = DirectoryStorage("file:///x", tmp_path)
    (tmp_path / "blog/db/1.dump").mkdir(parents=True)  # a directory where a file should be
    with pytest.raises(StorageError, match=r"cannot delete blog/db/1\.dump from file:///x"):
        store.delete("blog/db/1.dump")
