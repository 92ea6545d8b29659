"""Immutable releases: ``releases/vN`` directories, their records, and the ``current`` pointer.

    releases/vN/        the built app (the slug): processes run here, HOME points here
    releases/vN.json    its record: process types, config snapshot, commit, buildpacks, time
    releases/vN.log     its build output

A build happens in ``vN/`` itself (so paths a buildpack writes stay true); the release
exists once its record is written, last and atomically. A ``vN/`` without a record is a
build that failed or was cut short, and the next build starts over in it.
"""

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dokuen.errors import DokuenError
from dokuen.store import AppDir, write_atomic
from dokuen.supervise.environment import read_dotenv
from dokuen.supervise.procfile import Procfile

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

    @property
    def record_file(self) -> Path:
        return self.path.with_name(f"{self.name}.json")

    @property
    def log_file(self) -> Path:
        return self.path.with_name(f"{self.name}.log")

    def record(self) -> dict[str, Any]:
        """What was recorded when the release was made (``make_record``)."""
        try:
            data = json.loads(self.record_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DokuenError(
                f"{self.record_file}: cannot read the release record ({exc})"
            ) from None
        if not isinstance(data, dict):
            raise DokuenError(f"{self.record_file}: not a release record")
        return data

    def defaults(self, config: Mapping[str, str]) -> dict[str, str]:
        """Config defaults of the release: its buildpacks', then its ``.env`` expanded
        against the app's ``config`` (config vars, layered on top by the caller, win)."""
        buildpacks = self.record().get("buildpack_config") or {}
        return {**buildpacks, **read_dotenv(self.path, config)}

    def procfile(self) -> Procfile:
        """The release's process types (its Procfile's and the buildpacks' defaults)."""
        types = self.record().get("process_types")
        if not isinstance(types, dict) or not types:
            raise DokuenError(f"{self.record_file}: the release has no process types")
        return Procfile(tuple((str(k), str(v)) for k, v in types.items()))


def list_releases(app: AppDir) -> list[Release]:
    """Every complete release of the app, oldest first."""
    if not app.releases.is_dir():
        return []
    found = []
    for entry in app.releases.iterdir():
        match = _VERSION.fullmatch(entry.name)
        if match and entry.is_dir():
            release = Release(int(match[1]), entry)
            if release.record_file.is_file():
                found.append(release)
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


def start_release(app: AppDir, source: Path) -> Release:
    """Copy ``source`` into the directory of the next release, where it will be built.

    Later edits to ``source`` change nothing in the release. Until ``finish_release``, the
    release is not listed and nothing runs from it.
    """
    existing = list_releases(app)
    version = existing[-1].version + 1 if existing else 1
    release = Release(version, app.releases / f"v{version}")
    discard(release)  # what a cut-short build left
    app.releases.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, release.path, symlinks=True, ignore=_IGNORED)
    return release


def finish_release(release: Release, record: dict[str, Any]) -> None:
    """Make the built release real: its record is written last, atomically. The record may
    hold config values, so only dokuend's user can read it. Keys keep their order: the
    process types are in the Procfile's (releases made before kept them sorted)."""
    write_atomic(release.record_file, json.dumps(record, indent=2) + "\n", 0o600)


def discard(release: Release) -> None:
    """Remove a release's directory, record and build log."""
    release.record_file.unlink(missing_ok=True)
    shutil.rmtree(release.path, ignore_errors=True)
    release.log_file.unlink(missing_ok=True)


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
        discard(release)
    return doomed
