"""The daemon's requests for apps' databases: ``pg:*``.

One database operation per app at a time (create, destroy, and the capture, restore and
verification of a backup, backup/databases.py): a second one is refused at once with what
the first is doing, rather than queued behind a dump that may take minutes.

On the managed cluster an app reaches its database through a socket directory of its own
(sockets.py), made at ``pg:create`` and, for apps made before there were any, at start.
"""

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import anyio

from dokuen.apps.app import App
from dokuen.apps.config import set_config
from dokuen.conninfo import ConnInfo
from dokuen.control import Command, Output
from dokuen.data import database, sockets
from dokuen.data.cluster import PostgresUnavailable
from dokuen.data.database import Database
from dokuen.data.postgres import Postgres
from dokuen.errors import Conflict, DokuenError, InvalidName, NotFound
from dokuen.supervise.envdir import write_envdir
from dokuen.supervise.logmux import LogMux

LEGACY_HOST = "127.0.0.1"  # where Dokuen 0.1 sent apps: the managed cluster's TCP port


def app_group(app: App) -> int | None:
    """The group the app's processes run with: it alone (with dokuend) may enter the app's
    socket directory. None (dokuend's own gid) when apps do not run as their own users."""
    return app.runtime.isolation.group_of(app.dir)


class DatabaseCommands:
    """``pg:*`` over the daemon's apps and its PostgreSQL."""

    def __init__(
        self,
        postgres: Postgres,
        find_app: Callable[[dict[str, Any]], App],
        mux: LogMux,
    ) -> None:
        self.postgres = postgres
        self._find_app = find_app
        self._mux = mux
        self._busy: dict[str, str] = {}

    def handlers(self) -> dict[str, Command]:
        return {
            "pg:create": self.create,
            "pg:info": self.info,
            "pg:connection": self.connection,
            "pg:destroy": self.destroy,
        }

    @contextlib.asynccontextmanager
    async def exclusive(self, app: str, doing: str) -> AsyncIterator[None]:
        """Hold ``app``'s database for ``doing``; raise Conflict when another operation
        holds it."""
        if app in self._busy:
            raise Conflict(
                f"{app}'s database is busy: {self._busy[app]}; try again once that is done"
            )
        started = datetime.now(UTC).strftime("%H:%M:%S UTC")
        self._busy[app] = f"{doing} (since {started})"
        try:
            yield
        finally:
            del self._busy[app]

    def record(self, app: App) -> Database:
        """The app's database record (blocking). Raises NotFound or PostgresUnavailable."""
        record = database.read_record(app.dir)
        if record is None:
            raise NotFound(
                f"{app.name} has no database (create one: dokuenctl pg:create {app.name})"
            )
        if record.server != self.postgres.mode:
            raise PostgresUnavailable(
                f"{app.name}'s database was made on the {record.server} PostgreSQL, but "
                f"DOKUEN_POSTGRES is now {self.postgres.mode}"
            )
        return record

    async def login(self, app: App) -> tuple[Database, ConnInfo]:
        """The app's record and its login, with the server up."""
        record = await anyio.to_thread.run_sync(self.record, app)
        await self.postgres.admin()  # a managed cluster runs from here on
        return record, self.postgres.login(record.name, record.password, record.name)

    # -- pg:* ------------------------------------------------------------------------

    async def create(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find_app(args)
        async with self.exclusive(app.name, "creating its database"):
            if await anyio.to_thread.run_sync(database.read_record, app.dir):
                raise Conflict(f"{app.name} already has a database (see: dokuenctl pg:info)")
            if "DATABASE_URL" in app.config():
                raise Conflict(
                    f"{app.name} already has a DATABASE_URL (unset it first: dokuenctl "
                    f"config:unset {app.name} DATABASE_URL)"
                )
            admin = await self.postgres.admin()
            record = Database.new(app.name, self.postgres.mode)
            await anyio.to_thread.run_sync(self.postgres.app_socket, app.dir.root, app_group(app))
            await database.create(admin, record)
            try:
                await anyio.to_thread.run_sync(database.write_record, app.dir, record)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await database.destroy(admin, record.name)
                raise
            self._mux.event(app.name, f"database {record.name} created")
            url = self._public(app, record)
            await set_config(app, {"DATABASE_URL": url.url()}, [])
        return {"database": record.name, "url": url.shown(), "restarted": app.active}

    async def info(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find_app(args)
        record, login = await self.login(app)
        found = await database.describe(login)
        public = self._public(app, record)
        return {
            "app": app.name,
            "database": record.name,
            "role": record.name,
            "server": self.postgres.mode,
            "created": record.created,
            "url": public.shown(),
            **found,
        }

    async def connection(self, args: dict[str, Any], out: Output) -> Any:
        """What ``pg:psql`` needs to run psql itself (the password included)."""
        app = self._find_app(args)
        record, _login = await self.login(app)
        public = self._public(app, record)
        with contextlib.suppress(PostgresUnavailable):
            return {"environ": public.environ(), "psql": self.postgres.tool("psql")}
        return {"environ": public.environ(), "psql": None}

    async def destroy(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find_app(args)
        if args.get("confirm") != app.name:
            raise InvalidName(
                f"destroying {app.name}'s database deletes its data; confirm with: "
                f"dokuenctl pg:destroy {app.name} --confirm {app.name}"
            )
        async with self.exclusive(app.name, "destroying its database"):
            record = await anyio.to_thread.run_sync(self.record, app)
            await database.destroy(await self.postgres.admin(), record.name)
            await anyio.to_thread.run_sync(database.remove_record, app.dir)
            self._mux.event(app.name, f"database {record.name} destroyed")
            public = self._public(app, record)
            legacy = dataclasses.replace(public, host=LEGACY_HOST)
            if app.config().get("DATABASE_URL") in (public.url(), legacy.url()):
                await set_config(app, {}, ["DATABASE_URL"])
            await anyio.to_thread.run_sync(sockets.remove, app.dir.root)
        return {"database": record.name}

    def _public(self, app: App, record: Database) -> ConnInfo:
        return self.postgres.public(record.name, record.password, record.name, app.dir.root)

    async def restore_sockets(self, apps: Iterable[App]) -> None:
        """At start, before the apps' processes: every app with a database on the managed
        cluster gets its socket directory, and one whose DATABASE_URL is still Dokuen 0.1's
        (TCP on 127.0.0.1, where the cluster listens no more) gets the new one. Problems
        are logged, not raised: the other apps start anyway."""
        if self.postgres.mode != "managed":
            return
        for app in apps:
            try:
                record = await anyio.to_thread.run_sync(database.read_record, app.dir)
                if record is None or record.server != "managed":
                    continue
                await anyio.to_thread.run_sync(
                    self.postgres.app_socket, app.dir.root, app_group(app)
                )
                public = self._public(app, record)
                legacy = dataclasses.replace(public, host=LEGACY_HOST)
                if app.config().get("DATABASE_URL") == legacy.url():
                    # Its processes have not started yet: they start with the new URL.
                    await anyio.to_thread.run_sync(
                        write_envdir, app.dir.env, {"DATABASE_URL": public.url()}
                    )
                    self._mux.event(app.name, "DATABASE_URL now reaches its own socket")
            except DokuenError as exc:
                self._mux.event(app.name, f"its database socket: {exc}")
