"""Maintenance mode (Heroku's ``maintenance``, ``maintenance:on``, ``maintenance:off``):
nginx answers every request for the app with 503 and a plain page while its processes keep
running. The flag is a file in the app's directory, so it outlives daemon restarts."""

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from dokuen.apps.app import App
from dokuen.control import Command, Output
from dokuen.errors import Conflict, DokuenError


class MaintenanceCommands:
    """The ``maintenance*`` requests; ``find`` is the apps' own lookup by ``args["app"]``."""

    def __init__(
        self, find: Callable[[dict[str, Any]], App], sync_proxy: Callable[[], Awaitable[None]]
    ) -> None:
        self._find = find
        self._sync_proxy = sync_proxy

    def handlers(self) -> dict[str, Command]:
        return {
            "maintenance": self.show,
            "maintenance:on": self.turn_on,
            "maintenance:off": self.turn_off,
        }

    async def show(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find(args)
        return {"name": app.name, "maintenance": app.dir.maintenance}

    async def turn_on(self, args: dict[str, Any], out: Output) -> Any:
        return await self._switch(self._find(args), on=True)

    async def turn_off(self, args: dict[str, Any], out: Output) -> Any:
        return await self._switch(self._find(args), on=False)

    async def _switch(self, app: App, *, on: bool) -> dict[str, Any]:
        """Set the flag and wait for nginx to show it; if nginx refuses the new config, the
        flag goes back to what it was and the error says why."""
        if not app.runtime.proxied:
            raise Conflict(
                "maintenance mode needs nginx in front of the apps, and it is off "
                "(set DOKUEN_NGINX=managed or system and restart dokuend)"
            )
        async with app.exclusive():
            before = app.dir.maintenance
            await anyio.to_thread.run_sync(app.dir.set_maintenance, on)
            app.runtime.proxy_changed()
        try:
            await self._sync_proxy()
        except DokuenError:
            async with app.exclusive():
                await anyio.to_thread.run_sync(app.dir.set_maintenance, before)
                app.runtime.proxy_changed()
            raise
        word = "on" if on else "off"
        app.runtime.mux.event(app.name, f"maintenance mode {word}")
        return {"name": app.name, "maintenance": on}
