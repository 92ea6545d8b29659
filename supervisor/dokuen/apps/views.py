"""What ``apps:info``, ``releases``, ``releases:info`` and ``releases:output`` show: one app,
its releases, or one of them whole.

Read-only and blocking (a walk of the app's directory for its size): the requests run these
off the event loop.
"""

import os
from pathlib import Path
from typing import Any

from dokuen.apps.app import App
from dokuen.deploy import releases
from dokuen.errors import NotFound
from dokuen.names import not_found


def app_info(app: App, url: str | None, disk: bool = True) -> dict[str, Any]:
    """The app at a glance: its release, URL, domains, formation, processes, database,
    repository and the disk its directory uses (releases, repository, build cache; a walk
    of the whole tree, so ``disk=False`` leaves it out as None)."""
    summary = app.summary()
    return {
        **summary,
        "url": url,
        "domains": app.hosts(),
        "database": app.dir.database_file.exists(),
        "repo": str(app.dir.repo),
        "disk_bytes": disk_used(app.dir.root) if disk else None,
    }


def release_info(app: App, name: str) -> dict[str, Any]:
    """Release ``name`` (``vN``) of ``app``: its record, whether it is current, and the
    commands of its process types in Procfile order. Raises NotFound."""
    known = releases.list_releases(app.dir)
    matches = [r for r in known if r.name == name]
    if not matches:
        raise not_found("release", name, [r.name for r in known])
    release = matches[0]
    record = release.record()
    return {
        "version": release.name,
        "current": release == releases.current_release(app.dir),
        "description": release.description,
        "slug": release.path.name,
        "config_keys": sorted(record.get("config") or {}),
        "created": record.get("created"),
        "commit": record.get("commit"),
        "buildpacks": record.get("buildpacks", []),
        "process_types": dict(record.get("process_types") or {}),
        "build_log": release.log_file.exists(),
        "failed": record.get("failed"),  # why its processes failed to boot, or None
    }


def release_list(app: App) -> list[dict[str, Any]]:
    """Every kept release, newest first: when and from what it was made, which is current."""
    current = releases.current_release(app.dir)
    rows = []
    for release in reversed(releases.list_releases(app.dir)):
        record = release.record()
        rows.append(
            {
                "version": release.name,
                "description": release.description,
                "slug": release.path.name,
                "created": record.get("created"),
                "commit": record.get("commit"),
                "buildpacks": record.get("buildpacks", []),
                "process_types": list(record.get("process_types") or {}),  # Procfile order
                "current": release == current,
                "pending": app.pending is not None and app.pending.release == release,
                "failed": record.get("failed"),
            }
        )
    return rows


def build_log(app: App, target: str | None) -> str:
    """The build output of release ``vN`` of ``app`` (default: the current one)."""
    known = releases.list_releases(app.dir)
    if target is None:
        release = releases.current_release(app.dir)
        if release is None:
            raise NotFound(f"app {app.name!r} has no release yet")
    else:
        matches = [r for r in known if r.name == target]
        if not matches:
            raise not_found("release", target, [r.name for r in known])
        release = matches[0]
    try:
        return release.log_file.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        if release.path.name != release.name:
            raise NotFound(
                f"{release.name} of {app.name} was not built ({release.description}): it runs "
                f"{release.path.name}'s slug (dokuenctl releases:output {app.name} "
                f"{release.path.name})"
            ) from None
        raise NotFound(f"{release.name} of {app.name} has no build log") from None


def disk_used(top: Path) -> int:
    """Bytes of the files under ``top`` (links not followed, each inode counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _dirs, files in os.walk(top):
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:  # gone meanwhile (a build finished): not counted
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total
