"""Backups of an app's git repository: ``git bundle create --all`` of its bare repository,
stored in the backup target as ``APP/repo/ID.bundle`` with its manifest ``APP/repo/ID.json``
(app, the deploy branch's commit, every ref, time, size, SHA-256). A bundle is a whole
repository in one file: ``git clone FILE`` brings it back.

Blocking subprocess, file and storage I/O: the daemon calls these in a worker thread. git
gets argv lists and runs without the GIT_* variables of whoever started dokuend.
"""

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dokuen import __version__
from dokuen.backup.schedule import BackupResult, ids_of, unique_id
from dokuen.backup.storage import Storage, StorageError, sha256_of
from dokuen.errors import DokuenError, NotFound

KIND = "repo"


def _git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd``; return its output or raise DokuenError with its complaint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise DokuenError("git is not installed (apt install git)") from None
    if done.returncode != 0:
        raise DokuenError(f"git {args[0]} {args[1]} failed: {done.stderr.strip()}")
    return done.stdout


def _heads(cwd: Path, bundle: Path) -> dict[str, str]:
    """The refs a bundle holds: ``{"refs/heads/main": "<commit>", ...}``."""
    refs = {}
    for line in _git(cwd, "bundle", "list-heads", str(bundle)).splitlines():
        commit, _, ref = line.partition(" ")
        if ref and ref != "HEAD":
            refs[ref] = commit
    return refs


@contextmanager
def _scratch(parent: Path) -> Iterator[Path]:
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    import tempfile  # noqa: PLC0415 (0.6 MiB: not at start)

    directory = Path(tempfile.mkdtemp(prefix="bundle-", dir=parent))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _keys(app: str, backup: str) -> tuple[str, str]:
    return f"{app}/{KIND}/{backup}.bundle", f"{app}/{KIND}/{backup}.json"


def capture_bundle(
    storage: Storage,
    app: str,
    repository: Path,
    deploy_ref: str,
    scratch: Path,
    now: datetime,
) -> BackupResult:
    """Bundle ``repository`` and store it, then its manifest (the manifest last: a backup
    without one is not listed). ``scratch`` is where the bundle is made.

    Raises:
        NotFound: nothing was ever pushed (the repository has no refs).
        DokuenError: git failed; StorageError: the target refused it (nothing listed).
    """
    if not _git(repository, "for-each-ref", "--count=1").strip():
        raise NotFound(f"nothing was pushed to {app} yet: its repository has nothing to bundle")
    with _scratch(scratch) as work:
        bundle = work / f"{app}.bundle"
        _git(repository, "bundle", "create", "--quiet", str(bundle), "--all")
        refs = _heads(work, bundle)
        sha256, size = sha256_of(bundle), bundle.stat().st_size
        backup = unique_id(now, ids_of(storage.keys(f"{app}/{KIND}/"), app, KIND))
        bundle_key, manifest_key = _keys(app, backup)
        storage.put(bundle_key, bundle, sha256)
        manifest = work / "manifest.json"
        record = {
            "app": app,
            "kind": KIND,
            "id": backup,
            "created": now.astimezone(UTC).isoformat(timespec="seconds"),
            "ref": deploy_ref,
            "commit": refs.get(deploy_ref),
            "refs": refs,
            "key": bundle_key,
            "size": size,
            "sha256": sha256,
            "dokuen": __version__,
        }
        manifest.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        storage.put(manifest_key, manifest, sha256_of(manifest))
    return BackupResult(app, KIND, backup, bundle_key, size, sha256)


def read_manifest(storage: Storage, app: str, backup: str, scratch: Path) -> dict[str, Any]:
    """The manifest of the bundle ``backup``; raises StorageError when it is absent."""
    with _scratch(scratch) as work:
        path = work / "manifest.json"
        storage.get(_keys(app, backup)[1], path)
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise StorageError(
                f"{storage.url}: {_keys(app, backup)[1]} is not JSON: {exc}"
            ) from None
    return data


def verify_bundle(storage: Storage, app: str, backup: str, scratch: Path) -> None:
    """Prove the stored bundle restores: fetch it back, check its SHA-256 against its
    manifest, clone it, and find every branch and tag of the manifest at its commit.

    Raises:
        DokuenError: it does not restore (the message says where it failed).
    """
    manifest = read_manifest(storage, app, backup, scratch)
    bundle_key = _keys(app, backup)[0]
    with _scratch(scratch) as work:
        bundle = work / "repo.bundle"
        storage.get(bundle_key, bundle)
        if sha256_of(bundle) != manifest.get("sha256"):
            raise DokuenError(f"{bundle_key} does not match its manifest (its SHA-256 differs)")
        clone = work / "clone.git"
        try:
            _git(work, "clone", "--bare", "--quiet", str(bundle), str(clone))
        except DokuenError as exc:
            raise DokuenError(f"{bundle_key} does not restore: {exc}") from None
        refs = manifest.get("refs") or {}
        for ref, commit in refs.items():
            if not ref.startswith(("refs/heads/", "refs/tags/")):
                continue
            found = _git(clone, "rev-parse", "--verify", "--end-of-options", ref).strip()
            if found != commit:
                raise DokuenError(
                    f"{bundle_key} does not restore {ref}: the clone has {found[:7]}, "
                    f"the manifest {commit[:7]}"
                )
