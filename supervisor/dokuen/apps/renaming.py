"""``apps:rename OLD NEW`` (Heroku's): the app's processes stop, its directory moves to the
new name in one rename (store.py: releases, config, formation, domains, repository, build
cache, database and backup records), and it starts again as NEW (``APP``, ``DYNO``, log
lines and its nginx host follow). Its database and role keep their names; DATABASE_URL's
socket directory moves with the app, and its config and every release's config snapshot
are told so. The backups follow through the daemon's
``renamed`` hook (the backup wing)."""

import os
import stat
from collections.abc import Awaitable, Callable, MutableMapping

import anyio

from dokuen.apps.app import App
from dokuen.deploy import releases
from dokuen.errors import Conflict, DokuenError
from dokuen.store import AppDir, Store
from dokuen.supervise.envdir import read_envdir, write_envdir


async def rename(
    app: App,
    new: str,
    apps: MutableMapping[str, App],
    store: Store,
    start_app: Callable[[AppDir], Awaitable[App]],
) -> App:
    """Rename ``app`` to ``new`` (checked: a valid, unreserved name) and return the app as
    NEW, running its formation again. Raises Conflict when NEW exists or a build of the app
    is under way; then nothing changed."""
    old = app.name
    if new == old:
        raise Conflict(f"{old} is already named {new}")
    if new in apps or store.app(new).root.exists():
        raise Conflict(f"app {new!r} already exists (pick another name)")
    if app.deploying:
        raise Conflict(
            f"{old} is building a release; run apps:rename again once the deploy has finished"
        )
    runtime = app.runtime
    del apps[old]  # new requests for OLD fail from now on
    await app.close()
    try:
        await anyio.to_thread.run_sync(store.rename, old, new)
    except BaseException:
        with anyio.CancelScope(shield=True):  # OLD comes back as it was
            await _bring_back(store.app(old), start_app)
        raise
    moved = await anyio.to_thread.run_sync(_follow_paths, store.app(old), store.app(new))
    runtime.mux.event(new, f"renamed from {old}" + (f" ({moved} moved with it)" if moved else ""))
    renamed = await start_app(store.app(new))
    try:
        await renamed.restore()
    except DokuenError as exc:  # renamed all the same; ps and logs say what went wrong
        runtime.mux.event(new, f"could not be restarted after the rename: {exc}")
    return renamed


def _follow_paths(old: AppDir, new: AppDir) -> str:
    """Config values that name the app's own directory (DATABASE_URL's socket directory,
    ``apps/OLD/run/postgresql``) name the new one, in the env dir and in every kept
    release's config snapshot, so a rollback brings back no dead path. Returns the keys
    changed."""
    before, after = f"{old.root}/", f"{new.root}/"
    config = read_envdir(new.env)
    changed = {k: v.replace(before, after) for k, v in config.items() if before in v}
    if changed:
        write_envdir(new.env, changed, [])
    for release in releases.list_releases(new):
        snapshot = release.record().get("config") or {}
        if any(before in str(value) for value in snapshot.values()):
            fixed = {k: str(v).replace(before, after) for k, v in snapshot.items()}
            releases.restamp_config(release, fixed)
    return ", ".join(sorted(changed))


async def _bring_back(directory: AppDir, start_app: Callable[[AppDir], Awaitable[App]]) -> None:
    app = await start_app(directory)
    await app.restore()


def stale_paths(app: App, old: AppDir) -> list[str]:
    """What in the app's current slug may still name its old directory: a virtualenv made
    by its build (console scripts start with its absolute path). Looked at with lstat
    only: the slug is the app's, no link in it is followed."""
    release = releases.current_release(app.dir)
    if release is None:
        return []
    try:
        found = os.lstat(release.path / ".venv")
    except OSError:
        return []
    if not stat.S_ISDIR(found.st_mode):
        return []
    return [
        f"{release.name} of {app.name} was built under {old.root} and its .venv names that "
        f"path (its console scripts fail to start): deploy {app.name} again (git push, or "
        f"dokuenctl deploy {app.name} DIR)"
    ]
