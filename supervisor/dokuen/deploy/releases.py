"""Immutable releases: ``releases/vN`` directories, their records, and the ``current`` pointer.

    releases/vN/        the built app (the slug): processes run here, HOME points here
    releases/vN.json    its record: description, the slug it runs from, process types,
                        config snapshot, commit, buildpacks, time
    releases/vN.log     its build output
    releases/vN.pruned  vN's record was pruned, but a kept release still runs from vN/

A build happens in ``vN/`` itself (so paths a buildpack writes stay true); the release
exists once its record is written, last and atomically. A ``vN/`` without a record (and
without a ``.pruned`` mark) is a build under way, or one that failed or was cut short,
which the next build clears. A config change or a rollback makes a release without a
directory: its record names the slug it runs from (``"slug": "v4"``), as on Heroku.
Version numbers never repeat: a new one is past every ``vN`` entry there is.
"""

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dokuen.errors import DokuenError
from dokuen.store import AppDir, write_atomic
from dokuen.supervise.environment import read_dotenv
from dokuen.supervise.procfile import Procfile

_VERSION = re.compile(r"v([1-9][0-9]*)")
_ENTRY = re.compile(r"v([1-9][0-9]*)(\.json|\.log|\.pruned)?")
# What a copy of a working tree leaves out: version control, not the app.
_IGNORED = shutil.ignore_patterns(".git", ".hg", ".svn")


@dataclass(frozen=True)
class Release:
    """Release ``vN``; ``path`` is the slug it runs from: its own ``vN/`` for a build, an
    earlier release's directory for a config change or a rollback."""

    version: int
    path: Path

    @property
    def name(self) -> str:
        return f"v{self.version}"

    @property
    def directory(self) -> Path:
        """Its own ``vN/`` (a build's slug; none for a config change or a rollback)."""
        return self.path.with_name(self.name)

    @property
    def description(self) -> str:
        """What made it, in Heroku's words (``Deploy 1a2b3c4``, ``Rollback to v3``)."""
        record = self.record()
        text = record.get("description")
        if isinstance(text, str) and text:
            return text
        return deploy_description(record.get("commit"))  # made by 0.1: a build

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


def deploy_description(commit: object) -> str:
    """``Deploy 1a2b3c4`` for a commit, ``Deploy`` for a directory."""
    return f"Deploy {commit[:7]}" if isinstance(commit, str) and commit else "Deploy"


def config_description(changed: Iterable[str], removed: Iterable[str]) -> str:
    """Heroku's words for a config change: ``Set FOO, BAR config vars``, ``Remove FOO
    config vars`` (both, joined by ``and``, when one change does both)."""
    changed, removed = list(changed), list(removed)
    parts = [f"Set {', '.join(changed)} config vars"] if changed else []
    if removed:
        parts.append(f"{'remove' if parts else 'Remove'} {', '.join(removed)} config vars")
    return " and ".join(parts) or "Set no config vars"


def _release(releases_dir: Path, version: int) -> Release:
    """Release ``vN`` with the slug its record names (its own directory when the record
    names none, as records made by 0.1 do, or cannot be read)."""
    slug = f"v{version}"
    with contextlib.suppress(OSError, ValueError):
        named = json.loads((releases_dir / f"{slug}.json").read_text(encoding="utf-8"))
        if isinstance(named, dict) and _VERSION.fullmatch(str(named.get("slug", slug))):
            slug = str(named.get("slug", slug))
    return Release(version, releases_dir / slug)


def list_releases(app: AppDir) -> list[Release]:
    """Every complete release of the app (a record whose slug is there), oldest first."""
    if not app.releases.is_dir():
        return []
    found = []
    for entry in app.releases.iterdir():
        match = _ENTRY.fullmatch(entry.name)
        if match and match[2] == ".json" and entry.is_file():
            release = _release(app.releases, int(match[1]))
            if release.path.is_dir():
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
    return _release(app.releases, int(match[1]))


def current_procfile(app: AppDir, cache: dict[str, Procfile]) -> Procfile | None:
    """The current release's process types, None before the first deploy. A release never
    changes: ``cache`` keeps them by the ``current`` pointer, so another call is a readlink."""
    try:
        name = os.readlink(app.current)
    except OSError:
        return None
    if name not in cache:
        release = current_release(app)
        if release is None:
            return None
        cache.clear()
        cache[name] = release.procfile()
    return cache[name]


def next_version(app: AppDir) -> int:
    """One past every version there is: records, slugs (a build under way too), logs."""
    if not app.releases.is_dir():
        return 1
    versions = [int(m[1]) for e in app.releases.iterdir() if (m := _ENTRY.fullmatch(e.name))]
    return max(versions, default=0) + 1


def start_release(app: AppDir, source: Path) -> Release:
    """Copy ``source`` into the directory of the next release, where it will be built.
    Call it holding the app's build lock: what earlier builds left unfinished goes first.

    Later edits to ``source`` change nothing in the release. Until ``finish_release``, the
    release is not listed and nothing runs from it.
    """
    discard_unfinished(app)
    release = Release(next_version(app), app.releases / f"v{next_version(app)}")
    app.releases.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, release.path, symlinks=True, ignore=_IGNORED)
    return release


def discard_unfinished(app: AppDir) -> list[str]:
    """Remove the builds that never made a release (a build a killed dokuend left half
    made); return their names."""
    gone = []
    if app.releases.is_dir():
        for entry in app.releases.iterdir():
            match = _ENTRY.fullmatch(entry.name)
            if match and match[2] is None and _unfinished(app, int(match[1])):
                discard(Release(int(match[1]), entry))
                gone.append(entry.name)
    return gone


def _unfinished(app: AppDir, version: int) -> bool:
    """``vN/`` is a build that never made a release (no record, no ``.pruned`` mark)."""
    return not any(
        (app.releases / f"v{version}{suffix}").exists() for suffix in (".json", ".pruned")
    )


def derived_release(
    app: AppDir, base: Release, config: Mapping[str, str], description: str
) -> Release:
    """Record a new release that runs ``base``'s slug with ``config`` (a config change, or
    a rollback to ``base``): no build, no copy. The caller makes it current, or discards it."""
    version = next_version(app)
    record = {key: value for key, value in base.record().items() if key != "build_seconds"}
    record.update(
        version=version,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        description=description,
        slug=base.path.name,
        config=dict(config),
    )
    release = Release(version, base.path)
    finish_release(release, record)
    return release


def restamp_config(release: Release, config: Mapping[str, str]) -> None:
    """Record ``config`` as the release's (a deploy's config changed while it built: the
    record says what its processes run with, so a rollback to it restores that)."""
    record = release.record()
    if record.get("config") != dict(config):
        finish_release(release, {**record, "config": dict(config)})


def finish_release(release: Release, record: dict[str, Any]) -> None:
    """Make the built release real: its record is written last, atomically. The record may
    hold config values, so only dokuend's user can read it. Keys keep their order: the
    process types are in the Procfile's (releases made before kept them sorted)."""
    write_atomic(release.record_file, json.dumps(record, indent=2) + "\n", 0o600)


def mark_failed(release: Release, reason: str) -> None:
    """Record that the release's processes failed to boot (``releases`` shows it; a
    ``rollback`` never picks it by default)."""
    record = release.record()
    if record.get("failed") != reason:
        finish_release(release, {**record, "failed": reason})


def failure(release: Release) -> str | None:
    """Why the release failed to boot, or None (it never failed, or cannot be read)."""
    try:
        reason = release.record().get("failed")
    except DokuenError:
        return None
    return str(reason) if reason else None


def discard(release: Release) -> None:
    """Remove a release's record, build log and own directory (never the slug of another
    release it runs from)."""
    release.record_file.unlink(missing_ok=True)
    shutil.rmtree(release.directory, ignore_errors=True)
    release.log_file.unlink(missing_ok=True)
    release.directory.with_name(f"{release.name}.pruned").unlink(missing_ok=True)


def switch_current(app: AppDir, release: Release) -> None:
    """Point ``current`` at the release atomically (a new symlink renamed over the old)."""
    link = app.root / ".current.new"
    link.unlink(missing_ok=True)
    link.symlink_to(Path("releases") / release.name)
    link.replace(app.current)


def prune(app: AppDir, keep: int) -> list[Release]:
    """Delete all but the newest ``keep`` releases, never the current one, and every slug
    no kept release runs from. A slug a kept release needs stays (marked ``vN.pruned``
    when its own record goes); a build under way is never touched. Returns the deleted."""
    current = current_release(app)
    releases = list_releases(app)
    doomed = [r for r in releases[: max(0, len(releases) - keep)] if r != current]
    needed = {r.path.name for r in releases if r not in doomed}
    for release in doomed:
        if release.name in needed:  # its record goes, its slug stays for the others
            release.record_file.unlink(missing_ok=True)
            release.log_file.unlink(missing_ok=True)
            release.directory.with_name(f"{release.name}.pruned").touch()
        else:
            discard(release)
    for mark in app.releases.glob("v*.pruned"):
        orphan = Release(int(mark.name[1:].removesuffix(".pruned")), app.releases / mark.stem)
        if orphan.name not in needed:
            discard(orphan)
    return doomed
