"""The pure parts of database backups: ids, keys, manifests, row count comparisons, and the
checksum check every restore and verification starts with."""

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from dokuen.backup.dumps import Backups, ChecksumMismatch, Tools
from dokuen.backup.manifest import (
    BackupError,
    Manifest,
    backup_ids,
    certificate_key,
    compare_tables,
    dump_key,
    manifest_key,
    new_id,
    verified_key,
)
from dokuen.backup.schedule import expired_keys
from dokuen.backup.storage import DirectoryStorage, sha256_of
from dokuen.errors import InvalidName
from dokuen.supervise.spawn import OsSpawner

MANIFEST = Manifest(
    app="blog",
    id="20261125T224400Z",
    created="2026-11-25T22:44:00+00:00",
    release="v3",
    database="app_blog",
    size=3,
    sha256="0" * 64,
    server_version="15.18",
    pg_dump_version="15.18",
    tables={"public.items": 2},
)


def test_ids_are_the_utc_time() -> None:
    assert new_id(datetime(2026, 11, 25, 22, 44, 0, 999, tzinfo=UTC)) == "20261125T224400Z"
    paris = timezone(timedelta(hours=1))
    assert new_id(datetime(2026, 11, 25, 23, 44, tzinfo=paris)) == "20261125T224400Z"


def test_keys() -> None:
    assert dump_key("blog", "20261125T224400Z") == "blog/db/20261125T224400Z.dump"
    assert manifest_key("blog", "20261125T224400Z") == "blog/db/20261125T224400Z.json"
    assert verified_key("blog", "20261125T224400Z") == "blog/db/20261125T224400Z.verified.json"
    assert certificate_key("blog", "20261125T224400Z") == "blog/db/20261125T224400Z.tls.json"
    with pytest.raises(InvalidName, match="invalid backup id"):
        dump_key("blog", "../../etc")


def test_a_backup_is_listed_once_its_manifest_is_there() -> None:
    keys = [
        "blog/db/20261125T224400Z.dump",
        "blog/db/20261125T224400Z.json",
        "blog/db/20261125T224400Z.verified.json",
        "blog/db/20261126T000000Z.dump",  # its manifest never arrived: not a backup
        "blog/db/20261124T120000Z.json",
        "blog/db/notes.json",
        "blog/git/20261127T000000Z.json",
        "blogs/db/20261128T000000Z.json",
    ]
    assert backup_ids(keys, "blog") == ["20261124T120000Z", "20261125T224400Z"]


def test_a_manifest_round_trips_and_later_fields_are_ignored() -> None:
    text = MANIFEST.to_json()
    assert Manifest.from_json(text, "k") == MANIFEST
    newer = json.loads(text) | {"compression": "zstd"}
    assert Manifest.from_json(json.dumps(newer), "k") == MANIFEST


@pytest.mark.parametrize(
    "change",
    [
        {"format": 2},
        {"app": "../x"},
        {"id": "yesterday"},
        {"sha256": "abc"},
        {"certificate_sha256": "abc"},
        {"certificate_sha256": 7},
        {"tables": {"public.items": "many"}},
        {"size": None, "extra": 1, "format": None},
    ],
)
def test_bad_manifests_are_refused(change: dict[str, object]) -> None:
    text = json.dumps(json.loads(MANIFEST.to_json()) | change)
    with pytest.raises(BackupError, match=r"blog/db/x\.json is not a backup manifest"):
        Manifest.from_json(text, "blog/db/x.json")


@pytest.mark.parametrize(
    ("expected", "found", "problems"),
    [
        ({"public.a": 1}, {"public.a": 1}, []),
        ({}, {}, []),
        (
            {"public.a": 1, "public.b": 2},
            {"public.a": 3, "public.c": 0},
            [
                "table public.b is missing",
                "table public.c is not in the manifest",
                "table public.a has 3 rows, the manifest says 1",
            ],
        ),
    ],
)
def test_compare_tables(
    expected: dict[str, int], found: dict[str, int], problems: list[str]
) -> None:
    assert compare_tables(expected, found) == problems


def test_a_corrupt_dump_is_refused_naming_the_checksum(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    storage = DirectoryStorage("file:///target", tmp_path / "target")
    source = tmp_path / "dump"
    source.write_bytes(b"PGDMP and the rest")
    manifest = replace(MANIFEST, sha256=sha256_of(source), size=source.stat().st_size)
    storage.put(dump_key("blog", manifest.id), source, manifest.sha256)
    backups = Backups(storage, Tools("pg_dump", "pg_restore", OsSpawner(), tmp_path / "tmp"))
    backups.fetch(manifest, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == source.read_bytes()
    stored = tmp_path / "target" / dump_key("blog", manifest.id)
    stored.write_bytes(b"PGDMP and the resT")
    with pytest.raises(ChecksumMismatch, match="corrupt: checksum mismatch"):
        backups.fetch(manifest, tmp_path / "copy2")


def test_a_certificate_changed_in_the_target_is_refused_and_goes_with_its_backup(
    tmp_path: Path,
) -> None:
    (tmp_path / "target").mkdir()
    storage = DirectoryStorage("file:///target", tmp_path / "target")
    backups = Backups(storage, Tools("pg_dump", "pg_restore", OsSpawner(), tmp_path / "tmp"))
    assert backups.fetch_certificate(MANIFEST) is None  # taken without a certificate
    kit = tmp_path / "kit"
    kit.write_bytes(b'{"cert": "..."}')
    manifest = replace(MANIFEST, certificate_sha256=sha256_of(kit))
    storage.put(certificate_key("blog", manifest.id), kit, sha256_of(kit))
    assert Manifest.from_json(manifest.to_json(), "k") == manifest
    assert backups.fetch_certificate(manifest) == kit.read_bytes()
    (tmp_path / "target" / certificate_key("blog", manifest.id)).write_bytes(b'{"cert": "!"}')
    with pytest.raises(ChecksumMismatch, match=r"its certificate \(blog/db/.*\.tls\.json\)"):
        backups.fetch_certificate(manifest)
    # An expired backup takes its certificate with it; it is not a backup of its own.
    keys = [
        f"blog/db/{i}.{ext}"
        for i in ("20261124T000000Z", MANIFEST.id)
        for ext in ("dump", "tls.json", "json")
    ]
    assert backup_ids(keys, "blog") == ["20261124T000000Z", MANIFEST.id]
    assert expired_keys(keys, "blog", 1) == [
        "blog/db/20261124T000000Z.json",
        "blog/db/20261124T000000Z.dump",
        "blog/db/20261124T000000Z.tls.json",
    ]
