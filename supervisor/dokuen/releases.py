"""Immutable releases: ``releases/vN`` directories and the ``current`` pointer."""

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from dokuen.store import AppDir

_VERSION = re.compile(r"v([1-9][0-9]*)")
# What a copy of a working tree leaves out: version control, not the app.
_IGNORED = shutil.ignore_patterns(".git", ".hg", ".svn")


@dataclass(frozen=True)
class Release:
    version: int
    path: Path

    @property
    def name(self) -> str:
        return f"v{self.version}"


def list_releases(app: AppDir) -> list[Release]:
    """Every complete release of the app, oldest first."""
    if not app.releases.is_dir():
        return []
    found = []
    for entry in app.releases.iterdir():
        match = _VERSION.fullmatch(entry.name)
        if match and entry.is_dir():
            found.append(Release(int(match[1]), entry))
    return sorted(found, key=lambda release: release.version)


def current_release(app: AppDir) -> Release | None:
    """The release the ``current`` pointer names, or None before the first deploy."""
    try:
        target = os.readlink(app.current)
    except OSError:
        return None
    match = _VERSION.fullmatch(Path(target).name)
    if match is None:
        return None
    return Release(int(match[1]), app.releases / Path(target).name)


def stage_release(app: AppDir, source: Path) -> tuple[Release, Path]:
    """Copy ``source`` into a staging directory for the next release.

    Returns the release it will become and the staging path; ``publish`` makes it real.
    Later edits to ``source`` change nothing in the release.
    """
    existing = list_releases(app)
    version = existing[-1].version + 1 if existing else 1
    staging = app.releases / f".v{version}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, symlinks=True, ignore=_IGNORED)
    return Release(version, app.releases / f"v{version}"), staging


def publish(app: AppDir, release: Release, staging: Path) -> None:
    """Turn a staged copy into the release (a rename: complete or absent, never half)."""
    staging.rename(release.path)


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def switch_current(app: AppDir, release: Release) -> None:
    """Point ``current`` at the release atomically (a new symlink renamed over the old)."""
    link = app.root / ".current.new"
    link.unlink(missing_ok=True)
    link.symlink_to(Path("releases") / release.name)
    link.replace(app.current)


def prune(app: AppDir, keep: int) -> list[Release]:
    """Delete all but the newest ``keep`` releases, never the current one. Returns the deleted."""
    current = current_release(app)
    releases = list_releases(app)
    doomed = [r for r in releases[: max(0, len(releases) - keep)] if r != current]
    for release in doomed:
        shutil.rmtree(release.path, ignore_errors=True)
    return doomed
