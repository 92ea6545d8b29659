"""Git bundles as backups, with real git and a real directory target."""

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dokuen.backup.bundle import capture_bundle, read_manifest, verify_bundle
from dokuen.backup.storage import DirectoryStorage, sha256_of
from dokuen.deploy.repo import ensure_repo
from dokuen.errors import DokuenError, NotFound
from tests.test_repo import git

NOW = datetime(2026, 11, 25, 19, 7, 30, tzinfo=UTC)


@pytest.fixture
def repository(tmp_path: Path) -> tuple[Path, str]:
    """An app's bare repository with main and a tag pushed into it; and main's commit."""
    bare = tmp_path / "apps" / "blog" / "repo.git"
    bare.parent.mkdir(parents=True)
    ensure_repo(bare, {"pre-receive": "#!/bin/sh\nexit 0\n"})
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "Procfile").write_text("web: ./serve\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "first")
    git(work, "tag", "v1")
    git(work, "push", "-q", str(bare), "main", "v1")
    return bare, git(work, "rev-parse", "HEAD")


@pytest.fixture
def target(tmp_path: Path) -> DirectoryStorage:
    (tmp_path / "backups").mkdir()
    return DirectoryStorage(f"file://{tmp_path}/backups", tmp_path / "backups")


def test_a_bundle_is_stored_with_its_manifest_and_clones_back_to_the_same_commit(
    repository: tuple[Path, str], target: DirectoryStorage, tmp_path: Path
) -> None:
    bare, commit = repository
    result = capture_bundle(target, "blog", bare, "refs/heads/main", tmp_path / "tmp", NOW)
    assert (result.id, result.key) == ("20261125T190730Z", "blog/repo/20261125T190730Z.bundle")
    assert target.keys("blog/") == [
        "blog/repo/20261125T190730Z.bundle",
        "blog/repo/20261125T190730Z.json",
    ]
    manifest = read_manifest(target, "blog", result.id, tmp_path / "tmp")
    assert manifest["commit"] == commit
    assert manifest["refs"]["refs/tags/v1"] == commit
    assert (manifest["size"], manifest["sha256"]) == (result.size, result.sha256)
    assert manifest["created"] == "2026-11-25T19:07:30+00:00"
    verify_bundle(target, "blog", result.id, tmp_path / "tmp")
    copy = tmp_path / "copy.bundle"
    target.get(result.key, copy)
    subprocess.run(["git", "clone", "-q", str(copy), str(tmp_path / "restored")], check=True)
    assert git(tmp_path / "restored", "rev-parse", "main") == commit
    assert list((tmp_path / "tmp").iterdir()) == []  # no scratch left behind


def test_two_bundles_within_one_second_get_ids_of_their_own(
    repository: tuple[Path, str], target: DirectoryStorage, tmp_path: Path
) -> None:
    bare, _ = repository
    first = capture_bundle(target, "blog", bare, "refs/heads/main", tmp_path / "tmp", NOW)
    second = capture_bundle(target, "blog", bare, "refs/heads/main", tmp_path / "tmp", NOW)
    assert (first.id, second.id) == ("20261125T190730Z", "20261125T190731Z")


def test_an_empty_repository_has_nothing_to_bundle(
    target: DirectoryStorage, tmp_path: Path
) -> None:
    bare = tmp_path / "repo.git"
    ensure_repo(bare, {})
    with pytest.raises(NotFound, match="nothing was pushed to blog yet"):
        capture_bundle(target, "blog", bare, "refs/heads/main", tmp_path / "tmp", NOW)
    assert target.keys("") == []


def test_a_damaged_bundle_fails_verification(
    repository: tuple[Path, str], target: DirectoryStorage, tmp_path: Path
) -> None:
    bare, _ = repository
    result = capture_bundle(target, "blog", bare, "refs/heads/main", tmp_path / "tmp", NOW)
    stored = tmp_path / "backups" / result.key
    stored.write_bytes(stored.read_bytes()[:-20])
    with pytest.raises(DokuenError, match="does not match its manifest"):
        verify_bundle(target, "blog", result.id, tmp_path / "tmp")
    # A manifest that agrees with a truncated file: the clone itself fails.
    manifest_path = tmp_path / "backups" / "blog/repo" / f"{result.id}.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = sha256_of(stored)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DokuenError, match="does not restore"):
        verify_bundle(target, "blog", result.id, tmp_path / "tmp")
