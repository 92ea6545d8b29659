"""A switch under way, on disk: ``apps/APP/pending.json`` says which release is being
tried and what was current before it (release, formation, config, stopped).

While a switch's new processes are checked, nothing else of the app's state changes: the
``current`` pointer, ``formation.json`` and the env dir still say the last proven state, so
whoever reads them (this dokuend after a ``kill -9``, one that adopts the old processes)
gets that. Once the new processes pass, ``commit`` writes the new state, and removing the
record is the last step: a switch is proven when, and only when, the record is gone. Any
record found later (the daemon died mid-check or mid-commit, a commit failed) is undone by
``undo``: the previous state is written back where it differs, and the release it tried is
marked failed. The record holds config values, so only dokuend's user can read it.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dokuen.apps.slots import Target
from dokuen.deploy import releases
from dokuen.errors import DokuenError
from dokuen.store import AppDir, write_atomic
from dokuen.supervise.envdir import read_envdir, write_envdir

INTERRUPTED = "dokuend stopped before its processes passed their health checks"


def record_file(directory: AppDir) -> Path:
    return directory.root / "pending.json"


def begin(directory: AppDir, release: releases.Release) -> None:
    """Record that ``release`` is being tried, with the state it may replace."""
    current = releases.current_release(directory)
    previous = {
        "release": current.name if current else None,
        "formation": directory.read_formation(),
        "config": read_envdir(directory.env),
        "stopped": directory.stopped,
    }
    text = json.dumps({"release": release.name, "previous": previous}, indent=2) + "\n"
    write_atomic(record_file(directory), text, 0o600)


def commit(directory: AppDir, target: Target) -> None:
    """The new processes passed: make ``target`` the app's current state, record last."""
    write_config(directory, target.config)
    if directory.read_formation() != target.formation:
        directory.write_formation(target.formation)
    directory.set_stopped(False)
    releases.switch_current(directory, target.release)
    record_file(directory).unlink(missing_ok=True)


def write_config(directory: AppDir, config: Mapping[str, str]) -> None:
    """Make the app's env dir hold exactly ``config`` (only what differs is written)."""
    now = read_envdir(directory.env)
    changed = {key: value for key, value in config.items() if now.get(key) != value}
    gone = [key for key in now if key not in config]
    if changed or gone:
        write_envdir(directory.env, changed, gone)


def undo(directory: AppDir, reason: str = INTERRUPTED) -> str | None:
    """Put back what was current before an unproven switch, mark the release it tried
    failed (``reason``) and drop the record; return that release's name (None: no switch
    was under way). Raises DokuenError for a record that cannot be read, OSError when the
    old state cannot be written (the record stays, to be undone later)."""
    path = record_file(directory)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DokuenError(
            f"{path}: cannot read the record of an unfinished switch ({exc}); delete the file "
            f"if `current`, formation.json and env/ are right, then: dokuenctl start "
            f"{directory.name}"
        ) from None
    previous: dict[str, Any] = data.get("previous") or {}
    write_config(directory, previous.get("config") or {})
    formation = previous.get("formation") or {}
    if directory.read_formation() != formation:
        directory.write_formation(formation)
    directory.set_stopped(bool(previous.get("stopped")))
    name = previous.get("release")
    known = {release.name: release for release in releases.list_releases(directory)}
    if name in known:
        if releases.current_release(directory) != known[name]:
            releases.switch_current(directory, known[name])
    elif name is None:
        directory.current.unlink(missing_ok=True)
    tried = str(data.get("release"))
    if tried in known and tried != name:
        releases.mark_failed(known[tried], reason)
    path.unlink(missing_ok=True)
    return tried
