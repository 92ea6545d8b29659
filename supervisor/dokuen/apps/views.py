"""What ``apps:info`` and ``releases:info`` show: one app, or one of its releases, whole.

Read-only and blocking (a walk of the app's directory for its size): the requests run these
off the event loop.
"""

import os
from pathlib import Path
from typing import Any

from dokuen.apps.app import App
from dokuen.deploy import releases
from dokuen.names import not_found


def app_info(app: App, url: str | None) -> dict[str, Any]:
    """The app at a glance: its release, URL, domains, formation, processes, database,
    repository and the disk its directory uses (releases, repository, build cache)."""
    summary = app.summary()
    return {
        **summary,
        "url": url,
        "domains": app.hosts(),
        "database": app.dir.database_file.exists(),
        "repo": str(app.dir.repo),
        "disk_bytes": disk_used(app.dir.root),
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
        "created": record.get("created"),
        "commit": record.get("commit"),
        "buildpacks": record.get("buildpacks", []),
        "process_types": dict(record.get("process_types") or {}),
        "build_log": release.log_file.exists(),
    }


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
