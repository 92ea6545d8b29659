"""Moving an app's backups to its new name (backup/renaming.py) in a real directory target:
everything moves, manifests say the new name, and a key already taken under the new name
stops the move before anything moved."""

import json
from pathlib import Path

import pytest

from dokuen.backup.renaming import move_backups
from dokuen.backup.storage import DirectoryStorage, StorageError, sha256_of

BACKUP = "20261125T224400Z"


def put(storage: DirectoryStorage, key: str, text: str, scratch: Path) -> None:
    source = scratch.with_name("source")
    source.write_text(text)
    storage.put(key, source, sha256_of(source))


def stored(tmp_path: Path) -> tuple[DirectoryStorage, Path]:
    storage = DirectoryStorage("file:///backups", tmp_path / "backups")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    put(storage, f"blog/db/{BACKUP}.dump", "PGDMP...", scratch)
    put(storage, f"blog/db/{BACKUP}.json", json.dumps({"app": "blog", "id": BACKUP}), scratch)
    put(storage, f"blog/db/{BACKUP}.verified.json", json.dumps({"ok": True}), scratch)
    put(storage, f"blog/repo/{BACKUP}.bundle", "bundle", scratch)
    put(storage, f"blog/repo/{BACKUP}.json", json.dumps({"app": "blog"}), scratch)
    put(storage, f"blogger/db/{BACKUP}.json", json.dumps({"app": "blogger"}), scratch)
    return storage, scratch


def test_every_object_moves_and_each_manifest_says_the_new_name(tmp_path: Path) -> None:
    storage, scratch = stored(tmp_path)
    assert move_backups(storage, "blog", "journal", scratch) == 5
    assert storage.keys("blog/") == []
    assert storage.keys("journal/") == sorted(
        f"journal/{kind}/{BACKUP}.{ext}"
        for kind, ext in [
            ("db", "dump"),
            ("db", "json"),
            ("db", "verified.json"),
            ("repo", "bundle"),
            ("repo", "json"),
        ]
    )
    manifest = json.loads((storage.root / f"journal/db/{BACKUP}.json").read_text())
    assert manifest == {"app": "journal", "id": BACKUP, "renamed_from": "blog"}
    assert (storage.root / f"journal/db/{BACKUP}.dump").read_text() == "PGDMP..."
    assert json.loads((storage.root / f"journal/db/{BACKUP}.verified.json").read_text()) == {
        "ok": True
    }
    # An app whose name starts the same is not touched.
    assert storage.keys("blogger/") == [f"blogger/db/{BACKUP}.json"]
    assert list(scratch.iterdir()) == []  # no scratch file left behind


def test_a_key_taken_under_the_new_name_moves_nothing(tmp_path: Path) -> None:
    storage, scratch = stored(tmp_path)
    put(storage, f"journal/db/{BACKUP}.dump", "another app's", scratch)
    with pytest.raises(StorageError, match=f"already holds journal/db/{BACKUP}.dump"):
        move_backups(storage, "blog", "journal", scratch)
    assert len(storage.keys("blog/")) == 5
    assert (storage.root / f"journal/db/{BACKUP}.dump").read_text() == "another app's"


def test_certificates_move_with_the_backups_and_are_not_taken_for_manifests(
    tmp_path: Path,
) -> None:
    storage, scratch = stored(tmp_path)
    kit = json.dumps({"cert": "PEM", "key": "PEM", "app": "blog"})  # "app" as a trap
    put(storage, f"blog/db/{BACKUP}.tls.json", kit, scratch)
    put(storage, f"blog/tls/{BACKUP}.json", kit, scratch)
    assert move_backups(storage, "blog", "journal", scratch) == 7
    assert storage.keys("blog/") == []
    for key in (f"journal/db/{BACKUP}.tls.json", f"journal/tls/{BACKUP}.json"):
        assert (storage.root / key).read_text() == kit  # byte for byte: its SHA-256 holds
