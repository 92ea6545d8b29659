"""The daemon's requests for apps' databases and their backups: ``pg:*`` and ``backups:*``.

One database operation per app at a time (create, destroy, capture, restore, verify): a
second one is refused at once with what the first is doing, rather than queued behind a
dump that may take minutes.
"""

import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import anyio

from dokuen.apps.app import App
from dokuen.backup.dumps import BackupError, Backups, Manifest, Tools, Verification, summary
from dokuen.backup.storage import Storage
from dokuen.conninfo import ConnInfo
from dokuen.control import Command, Output, optional_arg
from dokuen.data import database
from dokuen.data.cluster import PostgresUnavailable
from dokuen.data.database import Database
from dokuen.data.postgres import Postgres
from dokuen.deploy import releases
from dokuen.errors import Conflict, DokuenError, InvalidName, NotFound, Refused
from dokuen.names import check_app_name, check_backup_id
from dokuen.settings import Settings
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.process import Spawner
from dokuen.supervise.spawn import OsSpawner

DOWNLOAD_CHUNK = 3 << 18  # bytes of dump per output line (a multiple of 3: whole base64)


class DatabaseCommands:
    """``pg:*`` and ``backups:*`` over the daemon's apps, its PostgreSQL and its target."""

    def __init__(
        self,
        postgres: Postgres,
        settings: Callable[[], Settings],
        find_app: Callable[[dict[str, Any]], App],
        mux: LogMux,
        spawner: Spawner,
        storage: Callable[[], Storage],
    ) -> None:
        self.postgres = postgres
        self._settings = settings  # read at each request: SIGHUP may change the target
        self._find_app = find_app
        self._mux = mux
        self._spawner = spawner
        self._storage = storage  # blocking: opens the backup target (backupcommands.py)
        self._busy: dict[str, str] = {}

    def handlers(self) -> dict[str, Command]:
        return {
            "pg:create": self.create,
            "pg:info": self.info,
            "pg:connection": self.connection,
            "pg:destroy": self.destroy,
            "backups": self.backups,
            "backups:capture": self.capture,
            "backups:restore": self.restore,
            "backups:verify": self.verify,
            "backups:download": self.download,
        }

    @contextlib.asynccontextmanager
    async def _exclusive(self, app: str, doing: str) -> AsyncIterator[None]:
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

    def _record(self, app: App) -> Database:
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

    async def _login(self, app: App) -> tuple[Database, ConnInfo]:
        """The app's record and its login, with the server up."""
        record = await anyio.to_thread.run_sync(self._record, app)
        await self.postgres.admin()  # a managed cluster runs from here on
        return record, self.postgres.login(record.name, record.password, record.name)

    async def _backups(self) -> Backups:
        """The dumps in the backup target (the daemon's one opener, kept while the settings
        name the same target; its first S3 use imports boto3, off the loop)."""
        storage = await anyio.to_thread.run_sync(self._storage)
        if not isinstance(self._spawner, OsSpawner):
            raise BackupError("backups need real processes")
        tools = Tools(
            self.postgres.tool("pg_dump"),
            self.postgres.tool("pg_restore"),
            self._spawner,
            self._settings().home / "tmp",
        )
        return Backups(storage, tools)

    # -- pg:* ------------------------------------------------------------------------

    async def create(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find_app(args)
        async with self._exclusive(app.name, "creating its database"):
            if await anyio.to_thread.run_sync(database.read_record, app.dir):
                raise Conflict(f"{app.name} already has a database (see: dokuenctl pg:info)")
            if "DATABASE_URL" in app.config():
                raise Conflict(
                    f"{app.name} already has a DATABASE_URL (unset it first: dokuenctl "
                    f"config:unset {app.name} DATABASE_URL)"
                )
            admin = await self.postgres.admin()
            record = Database.new(app.name, self.postgres.mode)
            await database.create(admin, record)
            try:
                await anyio.to_thread.run_sync(database.write_record, app.dir, record)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await database.destroy(admin, record.name)
                raise
            self._mux.event(app.name, f"database {record.name} created")
            url = self.postgres.public(record.name, record.password, record.name)
            await app.set_config({"DATABASE_URL": url.url()}, [])
        running = not app.dir.stopped and releases.current_release(app.dir) is not None
        return {"database": record.name, "url": url.shown(), "restarted": running}

    async def info(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find_app(args)
        record, login = await self._login(app)
        found = await database.describe(login)
        public = self.postgres.public(record.name, record.password, record.name)
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
        record, _login = await self._login(app)
        public = self.postgres.public(record.name, record.password, record.name)
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
        async with self._exclusive(app.name, "destroying its database"):
            record = await anyio.to_thread.run_sync(self._record, app)
            await database.destroy(await self.postgres.admin(), record.name)
            await anyio.to_thread.run_sync(database.remove_record, app.dir)
            self._mux.event(app.name, f"database {record.name} destroyed")
            public = self.postgres.public(record.name, record.password, record.name)
            if app.config().get("DATABASE_URL") == public.url():
                await app.set_config({}, ["DATABASE_URL"])
        return {"database": record.name}

    # -- backups:* -------------------------------------------------------------------

    async def backups(self, args: dict[str, Any], out: Output) -> Any:
        app = self._app_name(args)
        return [summary(*pair) for pair in await (await self._backups()).listing(app)]

    def _app_name(self, args: dict[str, Any]) -> str:
        """An app whose backups are asked for: it may be gone (its backups stay)."""
        try:
            return self._find_app(args).name
        except NotFound:
            return check_app_name(str(args.get("app")))

    async def capture(self, args: dict[str, Any], out: Output) -> Any:
        return summary(await self.capture_backup(self._find_app(args)), None)

    async def capture_backup(self, app: App) -> Manifest:
        """Take a backup of ``app``'s database now (what a schedule calls too).

        Raises:
            Conflict: another database operation of the app is under way.
            DokuenError: no database, no target, or the dump or its upload failed (then
                nothing was stored).
        """
        backups = await self._backups()
        async with self._exclusive(app.name, "capturing a backup"):
            record, login = await self._login(app)
            self._mux.event(app.name, f"backup of database {record.name} started")
            release = releases.current_release(app.dir)
            try:
                manifest = await backups.capture(app.name, release.name if release else None, login)
            except DokuenError as exc:
                self._mux.event(app.name, f"backup failed: {exc}")
                raise
            self._mux.event(app.name, f"backup {manifest.id} captured ({manifest.size} bytes)")
        return manifest

    async def restore(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find_app(args)
        if args.get("confirm") != app.name:
            raise InvalidName(
                f"restoring a backup replaces the tables of {app.name}'s database; confirm "
                f"with: dokuenctl backups:restore {app.name} [ID] --confirm {app.name}"
            )
        source = optional_arg(args, "source") or app.name
        check_app_name(source)
        backup_id = optional_arg(args, "id")
        backups = await self._backups()
        if backup_id is None:
            manifest = await self._newest_sound(backups, source)
        else:
            manifest = await backups.manifest(source, check_backup_id(backup_id))
        if manifest.app != app.name and args.get("force") is not True:
            raise Refused(
                f"backup {manifest.id} was taken from app {manifest.app}, not {app.name}: "
                f"restoring it replaces {app.name}'s tables with {manifest.app}'s (add --force "
                "if that is what you want)"
            )
        async with self._exclusive(app.name, f"restoring backup {manifest.id}"):
            record, login = await self._login(app)
            self._mux.event(app.name, f"restoring backup {manifest.id} of {manifest.app}")

            async def end_sessions() -> None:
                """One that holds a table in an open transaction would keep the restore
                waiting for ever (the app's processes restart after it anyway)."""
                ended = await database.end_sessions(await self.postgres.admin(), record.name)
                if ended:
                    self._mux.event(app.name, f"ended {ended} session(s) of {record.name}")

            try:
                await backups.restore(manifest, login, before=end_sessions)
            except DokuenError as exc:
                self._mux.event(app.name, f"restore of {manifest.id} failed: {exc}")
                raise
            self._mux.event(app.name, f"backup {manifest.id} restored into {record.name}")
            restarted = await _restart_if_running(app)
        return {**summary(manifest, None), "restarted": restarted}

    async def _newest_sound(self, backups: Backups, app: str) -> Manifest:
        """The newest backup of ``app`` whose last verification did not fail (a restore that
        names none takes it; one that failed is only restored when named)."""
        listing = await backups.listing(app)
        for manifest, verification in reversed(listing):
            if verification is None or verification.ok:
                return manifest
        return await backups.manifest(app, None)  # none sound: the newest, or NotFound

    async def verify(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find_app(args)
        backup_id = optional_arg(args, "id")
        manifest = await (await self._backups()).manifest(
            app.name, backup_id and check_backup_id(backup_id)
        )
        return summary(manifest, await self.verify_backup(app, manifest))

    async def verify_backup(self, app: App, manifest: Manifest) -> Verification:
        """Restore ``manifest``'s dump into a scratch database and check it (what a schedule
        calls too). Raises BackupError when it fails the check."""
        async with self._exclusive(app.name, f"verifying backup {manifest.id}"):
            _record, login = await self._login(app)
            admin = await self.postgres.admin()
            result = await (await self._backups()).verify(manifest, admin, login)
        if not result.ok:
            self._mux.event(app.name, f"backup {manifest.id} FAILED verification")
            raise BackupError(
                f"backup {manifest.id} of {app.name} failed verification: "
                + "; ".join(result.problems)
            )
        self._mux.event(app.name, f"backup {manifest.id} verified ({result.seconds:g}s)")
        return result

    async def download(self, args: dict[str, Any], out: Output) -> Any:
        """The dump, checked whole, streamed to dokuenctl as base64 output lines: the
        file is written by dokuenctl, as its user, where it was asked (or to stdout, which
        works over ssh too), never by dokuend."""
        app = self._app_name(args)
        backup_id = optional_arg(args, "id")
        backups = await self._backups()
        manifest = await backups.manifest(app, backup_id and check_backup_id(backup_id))
        with backups.tools.scratch() as work:
            dump = work / "backup.dump"
            await anyio.to_thread.run_sync(backups.fetch, manifest, dump)
            async with await anyio.open_file(dump, "rb") as reader:
                while chunk := await reader.read(DOWNLOAD_CHUNK):
                    await out.write(base64.b64encode(chunk).decode() + "\n")
        return summary(manifest, None)


async def _restart_if_running(app: App) -> bool:
    """After a restore: processes that may hold cached rows or plans start afresh."""
    if app.dir.stopped or releases.current_release(app.dir) is None:
        return False
    await app.restart(None)
    return True
