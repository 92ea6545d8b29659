"""Backups beyond one database: the backup target, schedules and repository bundles.

A scheduled run stores the app's database dump (databases.py) and a bundle of its
repository (bundle.py); ``backups:capture-repo`` stores bundles on demand and after every
push. Failures are loud: in the unified log, in the app's backup status, and as a warning on
every dokuenctl reply (scheduler.py).
"""

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from dokuen.apps.app import App
from dokuen.backup.schedule import BackupResult, RunRecord, make_schedule
from dokuen.backup.scheduler import BackupScheduler
from dokuen.backup.storage import Storage
from dokuen.backup.targets import open_storage
from dokuen.control import Command, Output, text_arg
from dokuen.deploy.receive import deploy_ref
from dokuen.errors import DokuenError, NotFound, ProtocolError, SettingsError
from dokuen.settings import Settings
from dokuen.store import Store
from dokuen.supervise.logmux import LogMux

if TYPE_CHECKING:
    from dokuen.backup.databases import Certificates, DatabaseBackupCommands
    from dokuen.data.requests import DatabaseCommands
    from dokuen.supervise.process import Spawner

# The database dumps' requests (databases.py), made by the first: the daemon's table names
# them without importing them (tests/test_imports.py keeps the two lists the same).
DUMP_REQUESTS = (
    "backups",
    "backups:capture",
    "backups:restore",
    "backups:verify",
    "backups:download",
)


class BackupCommands:
    def __init__(
        self,
        settings: Callable[[], Settings],
        store: Store,
        find_app: Callable[[dict[str, Any]], App],
        apps: Callable[[], Mapping[str, App]],
        databases: "tuple[DatabaseCommands, Spawner]",
        mux: LogMux,
    ) -> None:
        """``databases``: what the database dumps' requests are made of, by the first
        backup that needs them (``dumps``), not at start."""
        self._settings = settings
        self._find_app = find_app
        self._apps = apps
        self._dumps_of = databases
        self._dumps: DatabaseBackupCommands | None = None
        self.certificates: Certificates | None = None  # set by the daemon: backups carry them
        self._mux = mux
        self.scheduler = BackupScheduler(store, self._scheduled_capture, self.storage, mux.event)
        self._bundling = anyio.Lock()  # one repository bundle at a time
        self._storage: tuple[object, Storage] | None = None

    def status(self) -> dict[str, Any]:
        """``status --json``'s ``backups``: the target, the apps on a schedule, what fails."""
        return {
            "target": self._settings().backup_url,
            "scheduled": sorted(self.scheduler.schedules),
            "failing": self.scheduler.warnings(),
        }

    def dumps(self) -> "DatabaseBackupCommands":
        """The database dumps' requests, made (their modules imported: dumps, manifests,
        bundles, 0.2 MiB for the daemon's life) by the first backup that needs them."""
        if self._dumps is None:
            from dokuen.backup.databases import DatabaseBackupCommands  # noqa: PLC0415

            databases, spawner = self._dumps_of
            self._dumps = DatabaseBackupCommands(
                databases, self._settings, self._find_app, self._mux, spawner, self.storage
            )
            self._dumps.certificates = self.certificates
        return self._dumps

    def dump_handlers(self) -> dict[str, Command]:
        return self.dumps().handlers()

    def handlers(self) -> dict[str, Command]:
        return {
            "backups:schedule": self.backups_schedule,
            "backups:capture-repo": self.backups_capture_repo,
        }

    async def renamed(self, old: str, new: str) -> list[str]:
        """``apps:rename`` moved the app's directory: its schedule and the backups in the
        target follow it. Returns what could not follow (the rename itself stands)."""
        self.scheduler.rename(old, new)
        if not self._settings().backup_url:
            return []
        from dokuen.backup.renaming import move_backups  # noqa: PLC0415 (see __init__)

        scratch = self._settings().home / "tmp"
        async with self.scheduler.lock, self._bundling:  # no capture writes under OLD/ now
            try:
                storage = await anyio.to_thread.run_sync(self.storage)
                moved = await anyio.to_thread.run_sync(move_backups, storage, old, new, scratch)
            except (DokuenError, OSError) as exc:
                self._mux.event(new, f"backups of {old} not moved: {exc}")
                return [f"the backups of {old} were not moved: {exc}"]
        if moved:
            self._mux.event(new, f"{moved} backup files moved from {old}/ to {new}/")
        return []

    def storage(self) -> Storage:
        """The backup target (blocking: opening an S3 one imports boto3), kept while the
        settings name the same one.

        Raises:
            SettingsError: DOKUEN_BACKUP_URL is not set; StorageError: it is not a target.
        """
        url = self._settings().backup_url
        if url is None:
            raise SettingsError(
                "no backup target: set DOKUEN_BACKUP_URL (file:///srv/backups or "
                "s3://bucket/prefix) in $DOKUEN_HOME/dokuend.env, then reload dokuend"
            )
        environ = self._settings().backup_environ
        wanted = (url, sorted(environ.items()))
        if self._storage is None or self._storage[0] != wanted:
            self._storage = (wanted, open_storage(url, environ))
        return self._storage[1]

    async def _capture_repo(self, app: App, verify: bool) -> BackupResult:
        """Store a bundle of the app's repository; with ``verify``, restore it from the
        target and check it too. Raises DokuenError (NotFound: nothing pushed yet)."""
        ref = deploy_ref(app.config())
        scratch = self._settings().home / "tmp"
        now = self.scheduler.clock.now()

        from dokuen.backup import bundle  # noqa: PLC0415 (see __init__)

        def capture() -> BackupResult:
            storage = self.storage()
            result = bundle.capture_bundle(storage, app.name, app.dir.repo, ref, scratch, now)
            if verify:
                bundle.verify_bundle(storage, app.name, result.id, scratch)
                result = dataclasses.replace(result, verified=True)
            return result

        async with self._bundling:
            return await anyio.to_thread.run_sync(capture)

    async def _scheduled_capture(self, name: str, verify: bool) -> BackupResult:
        """What a scheduled backup stores: the app's database dump (when it has a database;
        with the app's certificate, stored alone when it has none) and its repository
        bundle (when anything was pushed). Returns the dump's result when
        there is one. Raises DokuenError when either fails, NotFound when there is neither."""
        import hashlib  # noqa: PLC0415 (libcrypto, 3 MiB: not at start)

        app = self._find_app({"app": name})
        stored = []
        if app.dir.database_file.exists():
            stored.append(await self._capture_database(app, verify))  # with its certificate
        elif (certificates := self.certificates) and (kit := await certificates.kit_of(app)):
            key = await certificates.back_up(app.name)  # no dump to carry it: alone
            if key is not None:
                backup = key.rsplit("/", 1)[-1].removesuffix(".json")
                digest = hashlib.sha256(kit).hexdigest()
                stored.append(BackupResult(app.name, "tls", backup, key, len(kit), digest))
        with contextlib.suppress(NotFound):
            stored.append(await self._bundle_and_record(app, "on schedule", verify))
        if not stored:
            raise NotFound(
                f"{name} has no database, no certificate and nothing was pushed to it yet"
            )
        return stored[0]

    async def _capture_database(self, app: App, verify: bool) -> BackupResult:
        """A dump of the app's database; with ``verify``, restored into a scratch database
        and checked. Raises DokuenError when it could not be stored or failed its check."""
        from dokuen.backup.manifest import dump_key  # noqa: PLC0415 (see __init__)

        manifest = await self.dumps().capture_backup(app)
        verified = None
        if verify:
            await self.dumps().verify_backup(app, manifest)
            verified = True
        key = dump_key(app.name, manifest.id)
        return BackupResult(
            app.name, "db", manifest.id, key, manifest.size, manifest.sha256, verified
        )

    async def _bundle_and_record(self, app: App, why: str, verify: bool) -> BackupResult:
        """``_capture_repo``, said in the unified log and kept in the app's backup status:
        a failure warns on every dokuenctl command until a bundle is stored again."""
        now = self.scheduler.clock.now()
        try:
            result = await self._capture_repo(app, verify)
        except NotFound:
            raise  # nothing pushed yet: nothing failed
        except DokuenError as exc:
            self._mux.event(app.name, f"repository backup FAILED ({why}): {exc}")
            await self.scheduler.record_bundle(app.name, RunRecord(now, ok=False, error=str(exc)))
            raise
        self._mux.event(app.name, f"repository backup stored ({why}): {result.key}")
        record = RunRecord(now, ok=True, id=result.id, verified=result.verified)
        await self.scheduler.record_bundle(app.name, record)
        return result

    async def backups_capture_repo(self, args: dict[str, Any], out: Output) -> Any:
        """Bundle one app's repository (``app``), or every app's (``all``), into the backup
        target; ``verify`` restores each from there too. ``push``: the post-receive hook
        asks, and without a target there is nothing to do."""
        if args.get("push") is True and self._settings().backup_url is None:
            return []
        await anyio.to_thread.run_sync(self.storage)  # no target: say so once
        verify = args.get("verify") is True
        if args.get("all") is not True:
            app = self._find_app(args)
            why = "after a push" if args.get("push") is True else "on demand"
            result = await self._bundle_and_record(app, why, verify)
            return [{"app": app.name, "ok": True, **dataclasses.asdict(result)}]
        results: list[dict[str, Any]] = []
        for name in sorted(self._apps()):
            if args.get("databases") is True and self._apps()[name].dir.database_file.exists():
                try:
                    dump = await self._capture_database(self._apps()[name], verify)
                except DokuenError as exc:
                    results.append({"app": name, "ok": False, "error": str(exc)})
                else:
                    results.append({"app": name, "ok": True, **dataclasses.asdict(dump)})
            try:
                result = await self._bundle_and_record(self._apps()[name], "on demand", verify)
            except NotFound as exc:
                results.append({"app": name, "ok": None, "error": str(exc)})
            except DokuenError as exc:
                results.append({"app": name, "ok": False, "error": str(exc)})
            else:
                results.append({"app": name, "ok": True, **dataclasses.asdict(result)})
        return results

    async def backups_schedule(self, args: dict[str, Any], out: Output) -> Any:
        """Show the app's backup schedule and its last runs; set one (``cron``, ``keep``,
        ``verify_every``), or remove it (``off``)."""
        app = self._find_app(args)
        if args.get("off") is True:
            await self.scheduler.set_schedule(app.name, None)
            self._mux.event(app.name, "backup schedule removed")
        elif args.get("cron") is not None:
            keep, every = args.get("keep"), args.get("verify_every", 1)
            if not (keep is None or type(keep) is int) or type(every) is not int:
                raise ProtocolError("arguments 'keep' and 'verify_every' must be whole numbers")
            now = self.scheduler.clock.now()
            schedule = make_schedule(text_arg(args, "cron"), now, keep, every)
            await self.scheduler.set_schedule(app.name, schedule)
            self._mux.event(app.name, f"backups scheduled at {schedule.cron!r}")
        return {**self.scheduler.describe(app.name), "target": self._settings().backup_url}
