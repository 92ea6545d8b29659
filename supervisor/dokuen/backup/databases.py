"""The daemon's requests for backups of apps' databases: ``backups`` (the list),
``backups:capture``, ``backups:restore``, ``backups:verify`` and ``backups:download``.

Each capture, restore and verification holds the app's database (data/requests.py), as
``pg:create`` and ``pg:destroy`` do: one database operation per app at a time.

A backup carries the app's certificate too (``ID.tls.json``), through ``Certificates``:
the tls wing answers it (this wing does not import it); the daemon wires the two.
"""

import base64
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from dokuen.apps.app import App
from dokuen.backup.dumps import Backups, Tools
from dokuen.backup.manifest import BackupError, Manifest, Verification, summary
from dokuen.backup.storage import Storage
from dokuen.control import Command, Output, optional_arg
from dokuen.data import database
from dokuen.data.requests import DatabaseCommands
from dokuen.deploy import releases
from dokuen.errors import DokuenError, InvalidName, NotFound, Refused
from dokuen.names import check_app_name, check_backup_id
from dokuen.settings import Settings
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.process import Spawner
from dokuen.supervise.spawn import OsSpawner

DOWNLOAD_CHUNK = 3 << 18  # bytes of dump per output line (a multiple of 3: whole base64)


class Certificates(Protocol):
    """What a backup needs of the app's HTTPS (tls/requests.py's CertCommands)."""

    async def kit_of(self, app: App) -> bytes | None:
        """The app's certificate, key, options and account key; None: it has none."""

    def check_kit(self, app: App, data: bytes, label: str) -> list[str]:
        """Raises DokuenError for a kit that cannot be served; returns warnings."""

    async def restore_kit(self, app: App, data: bytes, label: str) -> list[str]:
        """Serve the kit's certificate at once; returns warnings."""

    async def back_up(self, app: str, quiet: bool = False) -> str | None:
        """Store the kit alone (``APP/tls/ID.json``); None when there is nothing to store."""


class DatabaseBackupCommands:
    """``backups`` and ``backups:*`` of databases, over the daemon's apps, its PostgreSQL
    (through ``databases``) and its backup target."""

    def __init__(
        self,
        databases: DatabaseCommands,
        settings: Callable[[], Settings],
        find_app: Callable[[dict[str, Any]], App],
        mux: LogMux,
        spawner: Spawner,
        storage: Callable[[], Storage],
    ) -> None:
        self._databases = databases
        self._postgres = databases.postgres
        self._settings = settings  # read at each request: SIGHUP may change the target
        self._find_app = find_app
        self._mux = mux
        self._spawner = spawner
        self._storage = storage  # blocking: opens the backup target (requests.py)
        self.certificates: Certificates | None = None  # set by the daemon

    def handlers(self) -> dict[str, Command]:
        return {
            "backups": self.backups,
            "backups:capture": self.capture,
            "backups:restore": self.restore,
            "backups:verify": self.verify,
            "backups:download": self.download,
        }

    async def _backups(self) -> Backups:
        """The dumps in the backup target (the daemon's one opener, kept while the settings
        name the same target; its first S3 use imports boto3, off the loop)."""
        storage = await anyio.to_thread.run_sync(self._storage)
        if not isinstance(self._spawner, OsSpawner):
            raise BackupError("backups need real processes")
        tools = Tools(
            self._postgres.tool("pg_dump"),
            self._postgres.tool("pg_restore"),
            self._spawner,
            self._settings().home / "tmp",
        )
        return Backups(storage, tools)

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
        async with self._databases.exclusive(app.name, "capturing a backup"):
            record, login = await self._databases.login(app)
            self._mux.event(app.name, f"backup of database {record.name} started")
            release = releases.current_release(app.dir)
            try:
                kit = self.certificates and await self.certificates.kit_of(app)
                manifest = await backups.capture(
                    app.name, release.name if release else None, login, kit or None
                )
            except DokuenError as exc:
                self._mux.event(app.name, f"backup failed: {exc}")
                raise
            with_kit = " with its certificate" if manifest.certificate_sha256 else ""
            self._mux.event(
                app.name, f"backup {manifest.id} captured ({manifest.size} bytes){with_kit}"
            )
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
        label = f"the certificate of backup {manifest.id}"
        kit = await anyio.to_thread.run_sync(backups.fetch_certificate, manifest)
        if kit is not None and self.certificates is not None:  # before anything changes
            self.certificates.check_kit(app, kit, label)
        async with self._databases.exclusive(app.name, f"restoring backup {manifest.id}"):
            record, login = await self._databases.login(app)
            self._mux.event(app.name, f"restoring backup {manifest.id} of {manifest.app}")

            async def end_sessions() -> None:
                """One that holds a table in an open transaction would keep the restore
                waiting for ever (the app's processes restart after it anyway)."""
                ended = await database.end_sessions(await self._postgres.admin(), record.name)
                if ended:
                    self._mux.event(app.name, f"ended {ended} session(s) of {record.name}")

            try:
                await backups.restore(manifest, login, before=end_sessions)
            except DokuenError as exc:
                self._mux.event(app.name, f"restore of {manifest.id} failed: {exc}")
                raise
            self._mux.event(app.name, f"backup {manifest.id} restored into {record.name}")
            warnings = []
            if kit is not None and self.certificates is not None:
                try:
                    warnings = await self.certificates.restore_kit(app, kit, label)
                except DokuenError as exc:  # the database is back: that restore stands
                    warnings = [f"{label} was not put back: {exc}"]
                for warning in warnings:
                    self._mux.event(app.name, f"warning: {warning}")
            restarted = await _restart_if_running(app)
        result = {**summary(manifest, None), "restarted": restarted, "warnings": warnings}
        return {**result, "certificate": kit is not None}

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
        async with self._databases.exclusive(app.name, f"verifying backup {manifest.id}"):
            _record, login = await self._databases.login(app)
            admin = await self._postgres.admin()
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
    if not app.active:
        return False
    await app.restart(None)
    return True
