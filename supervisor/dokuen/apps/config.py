"""Changing an app's config: checked first, written, and proven by restarting its processes
with it; when they fail, the old config is written back and the old processes serve on."""

from collections.abc import Iterable, Mapping

import anyio

from dokuen.apps.app import App
from dokuen.apps.options import app_options
from dokuen.errors import DokuenError
from dokuen.names import check_config_key, check_settable_config_key
from dokuen.supervise.envdir import write_envdir


async def set_config(app: App, changes: Mapping[str, str], removals: Iterable[str]) -> bool:
    """Change ``app``'s config and restart its processes so they see it; False when none
    runs (not deployed, or stopped): the next start or deploy uses it."""
    for key in changes:
        check_settable_config_key(key)
    for key in removals:
        check_config_key(key)
    merged = {**app.config(), **changes}
    for key in removals:
        merged.pop(key, None)
    app_options(merged, app.runtime.settings.stop_timeout)  # refuse bad options early
    async with app.exclusive():
        before = app.config()
        await anyio.to_thread.run_sync(write_envdir, app.dir.env, changes, list(removals))
        keys = ", ".join([*changes, *(f"-{key}" for key in removals)])
        app.runtime.mux.event(app.name, f"config changed ({keys})")
        if not app.active:
            return False
        try:
            await app.converge(replace=lambda _spec: True)
        except DokuenError:
            # The old processes, with the old config, are what serves: keep it so.
            restore = {key: before[key] for key in [*changes, *removals] if key in before}
            gone = [key for key in [*changes, *removals] if key not in before]
            await anyio.to_thread.run_sync(write_envdir, app.dir.env, restore, gone)
            app.runtime.mux.event(app.name, f"config change ({keys}) undone")
            raise
        return True
