"""dokuend: owns every app, the port pool, the unified log and the control socket."""

import dataclasses
import functools
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from dokuen import __version__
from dokuen.apps.adoption import adopt_all, restore_all
from dokuen.apps.app import App
from dokuen.apps.maintenance import MaintenanceCommands
from dokuen.apps.requests import AppCommands, app_url
from dokuen.apps.runtime import Runtime
from dokuen.backup.requests import DUMP_REQUESTS, BackupCommands
from dokuen.backup.storage import clear_leftovers
from dokuen.control import Command, Output, on_first_use, serve
from dokuen.data.cluster import POSTGRES_APP
from dokuen.data.postgres import Postgres
from dokuen.data.requests import DatabaseCommands
from dokuen.deploy import repo
from dokuen.deploy.build import Builder
from dokuen.entrypoint import Entrypoint, find_dokuenctl
from dokuen.errors import DokuenError, SettingsError
from dokuen.events import get_logger
from dokuen.isolate.hierarchy import discover, off
from dokuen.isolate.isolation import set_up
from dokuen.names import not_found
from dokuen.proxy.driver import NGINX_APP, make_proxy
from dokuen.proxy.nginx import Site
from dokuen.service.account import git_account, socket_group
from dokuen.service.manager import ServiceManager
from dokuen.settings import Settings, load_settings
from dokuen.ssh import keys as sshkeys
from dokuen.ssh.requests import SshKeyCommands
from dokuen.store import AppDir, Store
from dokuen.supervise import handed, handover, reaper
from dokuen.supervise.clock import Clock, SystemClock
from dokuen.supervise.keeper import Keeper
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.ports import PortPool
from dokuen.supervise.process import Spawner
from dokuen.supervise.record import RUN_DIR
from dokuen.supervise.spawn import OsSpawner
from dokuen.tls.requests import CertCommands

log = get_logger()

EXPORT_REQUESTS = ("export:spec", "export:slug")  # tests/test_imports.py keeps them true


def export_requests(find_app: Callable[[dict[str, Any]], App]) -> dict[str, Command]:
    """The export wing's requests, imported by the first (tarfile and the spec: 0.3 MiB)."""
    from dokuen.export.requests import ExportCommands  # noqa: PLC0415

    return ExportCommands(find_app).handlers()


class Daemon:
    """The root of the task tree: signals and the control socket outside, apps inside."""

    def __init__(
        self,
        settings: Settings,
        *,
        environ: dict[str, str] | None = None,
        spawner: Spawner | None = None,
        clock: Clock | None = None,
        dokuenctl: Path | None = None,
        service: ServiceManager | None = None,
    ) -> None:
        """``dokuenctl``: what git hooks and ssh keys run (default: the one beside dokuend)."""
        self.settings = settings
        self._dokuenctl = dokuenctl or find_dokuenctl(sys.argv[0])
        self.service = service or ServiceManager()
        handed.take()  # the FIFO readers a re-exec handed over, out of os.environ
        self._environ = dict(os.environ if environ is None else environ)
        self.store = Store(settings.home)
        spawner = spawner or OsSpawner(subreaper=reaper.become_subreaper())
        keeper = (
            Keeper(settings.home / RUN_DIR, spawner) if isinstance(spawner, OsSpawner) else None
        )
        self.runtime = Runtime(
            settings=settings,
            ports=PortPool(settings.port_range),
            mux=LogMux(settings.log_file, settings.log_max_bytes, settings.log_keep),
            spawner=spawner,
            clock=clock or SystemClock(),
            builder=Builder(spawner) if isinstance(spawner, OsSpawner) else None,
            keeper=keeper,
        )
        self.apps: dict[str, App] = {}
        self._cgroups_off: str | None = "not looked for yet"  # why there are none
        self.started = time.time()
        self.proxy, self.proxy_problem = make_proxy(
            settings, spawner, self._sites, self.runtime.mux
        )
        if self.proxy is not None:
            self.proxy.keeper = keeper
            self.runtime = dataclasses.replace(
                self.runtime,
                proxy_changed=self.proxy.changed,
                proxy_sync=self.proxy.sync,
                proxy_batch=self.proxy.batch,
                proxied=True,
            )
        self._apps_group: anyio.abc.TaskGroup | None = None
        self.handover = handover.Handover(
            keeper,
            self.runtime.mux,
            lambda: {**os.environ, **self.service.passed},
            lambda: sorted(app.name for app in self.apps.values() if app.deploying),
            self.service.reloading,
            lambda: self.service.ready(self._status_line()),
            self.started,
        )
        if self.proxy is not None and self.proxy.router is not None:
            self.handover.before_exec.append(self.proxy.router.hand_over)
        mux = self.runtime.mux
        self.app_requests = AppCommands(
            self.apps,
            lambda: self.runtime,
            self.store,
            self._start_app,
            self._sync_proxy,
            self._entrypoint,
            lambda name: self.backups.scheduler.forget(name),  # noqa: PLW0108 (made below)
            (NGINX_APP, POSTGRES_APP),
            renamed=lambda old, new: self.backups.renamed(old, new),  # noqa: PLW0108 (below)
        )
        find_app = self.app_requests.find
        self.postgres = Postgres(settings, spawner, mux)
        self.databases = DatabaseCommands(self.postgres, find_app, mux)
        apps = lambda: self.apps  # noqa: E731
        self.backups = BackupCommands(
            lambda: self.settings, self.store, find_app, apps, (self.databases, spawner), mux
        )
        self._git = git_account()  # who pushes over ssh, when not dokuend's own user
        keys = SshKeyCommands(self._authorized_keys, self._entrypoint, self._git and self._git[1])
        maintenance = MaintenanceCommands(find_app, self._sync_proxy)
        self.https = self.backups.certificates = CertCommands(self, find_app)  # dumps carry them
        self._commands: dict[str, Command] = {"status": self.status, **self.https.handlers()}
        self._commands["daemon:reload"] = lambda _args, _out: self.handover.request(self._root)
        for wing in (self.app_requests, maintenance, self.databases, self.backups, keys):
            self._commands.update(wing.handlers())
        self._commands.update(on_first_use(EXPORT_REQUESTS, lambda: export_requests(find_app)))
        self._commands.update(on_first_use(DUMP_REQUESTS, self.backups.dump_handlers))

    def _sites(self) -> list[Site]:
        """Every app nginx shows, with its certificate; a broken app is left out (and said so)."""
        sites = []
        for app in self.apps.values():
            try:
                sites.append(self.https.certs.decorate(app.site()))
            except DokuenError as exc:
                self.runtime.mux.event(app.name, f"left out of nginx: {exc}")
        return sites

    async def _sync_proxy(self) -> None:
        """Wait until nginx shows the current state; raise if it refused the new config."""
        self.https.certs.apps_changed()  # an app created, renamed or destroyed: its files
        if self.proxy is not None:
            await self.proxy.sync()

    # -- the task tree ---------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until SIGTERM/SIGINT (or cancellation), then stop every app and return."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        await anyio.to_thread.run_sync(self._find_cgroups)
        isolation = await anyio.to_thread.run_sync(set_up, self.settings, socket_group(), self._git)
        self.runtime = dataclasses.replace(self.runtime, isolation=isolation)
        async with anyio.create_task_group() as outer:
            # The log writer outlives everything else, so the last "stopped" lines land.
            await outer.start(self.runtime.mux.run)
            # Outside `root`: the pings go on while the apps stop, until the very end.
            outer.start_soon(self.service.keep_alive)
            # Outside `root` too: PostgreSQL starts before the apps and stops after them.
            async with anyio.create_task_group() as services:
                await services.start(self.postgres.run)
                await self._run_root(outer, task_status)
                services.cancel_scope.cancel()
            outer.cancel_scope.cancel()
        if self.runtime.cgroups is not None:  # every app has stopped: its groups are empty
            await anyio.to_thread.run_sync(self.runtime.cgroups.clear)
        log.info("daemon.stopped")

    def _find_cgroups(self) -> None:
        """Use the cgroups this machine has (``_restore`` empties them first)."""
        spawner = self.runtime.spawner
        if not isinstance(spawner, OsSpawner):
            self._cgroups_off = "a daemon of fakes"
            return
        cgroups, self._cgroups_off = discover(self.settings.cgroups, self.settings.home)
        spawner.cgroups = cgroups
        self.runtime = dataclasses.replace(self.runtime, cgroups=cgroups)

    async def _run_root(
        self, outer: anyio.abc.TaskGroup, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        """The control socket and the apps, until SIGTERM/SIGINT cancels them."""
        async with anyio.create_task_group() as root:
            # Signals are handled outside `root`, so a second SIGTERM or ^C while the
            # apps stop finds a handler, not the default action that would kill us.
            outer.start_soon(self._handle_signals, root.cancel_scope)
            listen = functools.partial(
                serve,
                group=socket_group(),
                warnings=self.backups.scheduler.warnings,
                idle_timeout=self.settings.control_timeout,
                listening=self.handover.listening,
            )
            await root.start(listen, self.settings.socket, self.handle)
            self._root = root
            async with anyio.create_task_group() as apps:
                self._apps_group = apps
                await self._open_apps()  # before nginx's first map: every app is in it
                if self.proxy is not None:
                    await root.start(self.proxy.run)
                await self.postgres.settle()  # apps that connect at boot find it up
                await self._restore()
                if isinstance(spawner := self.runtime.spawner, OsSpawner):
                    # Every process left to adopt is in `live` now: the reaper keeps off.
                    root.start_soon(spawner.reap_orphans)
                await root.start(self.backups.scheduler.run)
                await root.start(self.https.certs.run)
                log.info(
                    "daemon.ready",
                    version=__version__,
                    pid=os.getpid(),
                    home=str(self.settings.home),
                    apps=len(self.apps),
                )
                self.service.ready(self._status_line())
                root.start_soon(self.service.report_status, self._status_line)
                task_status.started()
                await anyio.sleep_forever()

    async def _open_apps(self) -> None:
        """Every app, given what a dead dokuend (or this one before a re-exec) left of it to
        adopt; what is not adopted is stopped, and its cgroups emptied."""
        for name in self.store.app_names():
            await self._start_app(self.store.app(name))
        # The lock is ours: no other dokuend of this home runs.
        await adopt_all(self.apps, self.runtime, self.settings.stop_timeout)

    async def _restore(self) -> None:
        await anyio.to_thread.run_sync(clear_leftovers, self.settings.home / "tmp")
        await anyio.to_thread.run_sync(self._refresh_entrypoints)
        apps = [self.store.app(name) for name in self.store.app_names()]
        home, isolation = self.settings.home, self.runtime.isolation
        for problem in await anyio.to_thread.run_sync(isolation.set_up_home, home, apps):
            log.warning("isolate.left_alone", problem=problem)
        # Before their processes start: apps of Dokuen 0.1 get their socket's DATABASE_URL.
        await self.databases.restore_sockets(self.apps.values())
        await restore_all(self.apps.values(), self.runtime, self.settings.stop_timeout)
        try:
            await self._sync_proxy()
        except DokuenError as exc:
            log.error("nginx.restore_failed", error=str(exc))

    async def _start_app(self, directory: AppDir) -> App:
        """Run the app in the apps' task group and add it to ``apps``."""
        app = App(directory, self.runtime)
        assert self._apps_group is not None
        await self._apps_group.start(app.run)
        self.apps[directory.name] = app
        return app

    def _refresh_entrypoints(self) -> None:
        """Give every app its repository; write hooks and authorized_keys for this dokuenctl."""
        try:
            entrypoint = self._entrypoint()
            hooks = repo.render_hooks(entrypoint, self.settings.backup_url is not None)
            if sshkeys.refresh(self._authorized_keys, entrypoint, self._git and self._git[1]):
                log.info("ssh_keys.refreshed", file=str(self._authorized_keys))
        except DokuenError as exc:
            log.error("git.unavailable", error=str(exc))
            return
        for name in self.store.app_names():
            try:
                if repo.ensure_repo(self.store.app(name).repo, hooks):
                    log.info("git.repo_created", app=name)
            except DokuenError as exc:
                log.error("git.repo_failed", app=name, error=str(exc))

    async def _handle_signals(self, scope: anyio.CancelScope) -> None:
        def stop() -> None:
            if scope.cancel_called:
                log.info("daemon.already_stopping")
            else:
                self.service.stopping()
            scope.cancel()

        handlers: dict[signal.Signals, Callable[[], None]] = {
            signal.SIGTERM: stop,
            signal.SIGINT: stop,
            signal.SIGHUP: self._reload,
            signal.SIGUSR2: lambda: self.handover.on_signal(self._root),
        }
        with anyio.open_signal_receiver(*handlers) as signals:
            async for signum in signals:
                log.info("daemon.signal", signal=signal.Signals(signum).name)
                handlers[signal.Signals(signum)]()

    def _reload(self) -> None:
        """SIGHUP: re-read the settings; a bad file is reported and the old settings stay."""
        self.service.reloading()
        try:
            self._reload_settings()
        finally:
            self.service.ready(self._status_line())

    def _reload_settings(self) -> None:
        try:
            settings = load_settings(self._environ, self.settings.home)
        except SettingsError as exc:
            log.error("daemon.reload_failed", error=str(exc))
            return
        self.settings = settings
        self._refresh_entrypoints()  # the post-receive hook comes and goes with DOKUEN_BACKUP_URL
        mux, ports = self.runtime.mux, self.runtime.ports
        mux.max_bytes, mux.keep = settings.log_max_bytes, settings.log_keep
        ports.ports = settings.port_range
        self.runtime = dataclasses.replace(self.runtime, settings=settings)
        for app in self.apps.values():
            app.runtime = self.runtime
        log.info("daemon.reloaded", settings=repr(settings))

    # -- requests --------------------------------------------------------------------

    async def handle(self, command: str, args: dict[str, Any], out: Output) -> Any:
        try:
            handler = self._commands[command]
        except KeyError:
            raise not_found("command", command, self._commands) from None
        log.info("control.request", command=command, app=args.get("app"))
        return await handler(args, out)

    def _status_line(self) -> str:
        """The service manager's STATUS: ``3 apps, 7/8 processes running``."""
        summaries = [app.summary() for app in self.apps.values()]
        running = sum(s["running"] for s in summaries)
        processes = sum(s["processes"] for s in summaries)
        apps = "1 app" if len(summaries) == 1 else f"{len(summaries)} apps"
        broken = sum(bool(s["broken"]) for s in summaries)
        said = f", {broken} broken" if broken else ""
        return f"{apps}, {running}/{processes} processes running{said}"

    async def status(self, args: dict[str, Any], out: Output) -> Any:
        summaries = [app.summary() for app in self.apps.values()]
        proxy, cgroups = self.proxy, self.runtime.cgroups
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 1),
            "started": self.started,
            "reexec": self.handover.status(),
            "home": str(self.settings.home),
            "apps": len(summaries),
            "processes": sum(s["processes"] for s in summaries),
            "running": sum(s["running"] for s in summaries),
            "crashed": sum(s["crashed"] for s in summaries),
            "broken": {s["name"]: s["broken"] for s in summaries if s["broken"]},
            "isolation": self.runtime.isolation.status(),
            "nginx": proxy.status() if proxy else {"mode": "off", "problem": self.proxy_problem},
            "postgres": self.postgres.status(),
            "https": self.https.certs.status(),
            "cgroups": cgroups.status() if cgroups else off(str(self._cgroups_off)),
            "service": self.service.info(),
            "urls": {app.name: app_url(app) for app in self.apps.values()},
            "maintenance": sorted(a.name for a in self.apps.values() if a.dir.maintenance),
            "backups": self.backups.status(),
        }

    def _entrypoint(self) -> Entrypoint:
        """What git hooks and ssh keys run; raises SettingsError when it cannot be written."""
        if self._dokuenctl is None:
            raise SettingsError(
                "cannot find dokuenctl beside dokuend or on PATH; git hooks and ssh keys run "
                "it (reinstall dokuen)"
            )
        return Entrypoint(self._dokuenctl, self.settings.socket.absolute())

    @property
    def _authorized_keys(self) -> Path:
        return self.settings.home / ".ssh" / "authorized_keys"
