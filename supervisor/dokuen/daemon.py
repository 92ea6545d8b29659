"""dokuend: owns every app, the port pool, the unified log and the control socket."""

import contextlib
import dataclasses
import functools
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog

from dokuen import __version__
from dokuen.apps.app import App, Runtime
from dokuen.backup.requests import BackupCommands
from dokuen.control import Command, Output, cancel_when, serve, text_arg
from dokuen.data.cluster import POSTGRES_APP
from dokuen.data.postgres import Postgres
from dokuen.data.requests import DatabaseCommands
from dokuen.deploy import repo
from dokuen.deploy.build import Builder
from dokuen.entrypoint import Entrypoint, find_dokuenctl
from dokuen.errors import (
    Conflict,
    DokuenError,
    InvalidName,
    ProtocolError,
    SettingsError,
)
from dokuen.names import (
    check_app_name,
    check_config_key,
    check_domain,
    check_ssh_key_name,
    not_found,
    parse_process_name,
)
from dokuen.proxy.driver import NGINX_APP, NginxProxy, find_nginx
from dokuen.proxy.nginx import Managed, Site, listen_directive
from dokuen.service.account import socket_group
from dokuen.service.manager import ServiceManager
from dokuen.settings import Settings, load_settings
from dokuen.ssh import keys as sshkeys
from dokuen.ssh.requests import SshKeyCommands
from dokuen.store import AppDir, Store
from dokuen.supervise import reaper
from dokuen.supervise.logmux import LogFilter, LogMux, tail
from dokuen.supervise.ports import PortPool
from dokuen.supervise.process import Clock, Spawner, SystemClock
from dokuen.supervise.spawn import OsSpawner

log = structlog.get_logger()

REAP_INTERVAL = 5.0


def _speaker(out: Output, end: str = "\n") -> Callable[[str], Awaitable[None]]:
    """Output for the requester, each piece followed by ``end``. One that went away
    (Ctrl-C) must not stop a deploy half-way, so a closed connection is ignored."""

    async def say(text: str) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await out.write(text + end)

    return say


def _check_release_name(name: str) -> None:
    if not re.fullmatch(r"v[1-9][0-9]{0,8}", name):
        raise InvalidName(f"invalid release {name!r} (use vN, e.g. v3)")


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
        """``dokuenctl`` is what git hooks and ssh keys run (default: the one installed
        beside this program)."""
        self.settings = settings
        self._dokuenctl = dokuenctl or find_dokuenctl(sys.argv[0])
        self._creating = anyio.Lock()  # one apps:create (or first push) at a time
        self.service = service or ServiceManager()
        self._environ = dict(os.environ if environ is None else environ)
        self.store = Store(settings.home)
        spawner = spawner or OsSpawner(subreaper=reaper.become_subreaper())
        self.runtime = Runtime(
            settings=settings,
            ports=PortPool(settings.port_range),
            mux=LogMux(settings.log_file, settings.log_max_bytes, settings.log_keep),
            spawner=spawner,
            clock=clock or SystemClock(),
            builder=Builder(spawner) if isinstance(spawner, OsSpawner) else None,
        )
        self.apps: dict[str, App] = {}
        self.started = time.time()
        self.proxy, self.proxy_problem = self._make_proxy(spawner)
        if self.proxy is not None:
            self.runtime = dataclasses.replace(
                self.runtime,
                proxy_changed=self.proxy.changed,
                proxy_sync=self.proxy.sync,
                proxy_batch=self.proxy.batch,
                proxied=True,
            )
        self._apps_group: anyio.abc.TaskGroup | None = None
        self._commands: dict[str, Command] = {
            "status": self.status,
            "apps": self.list_apps,
            "apps:create": self.create_app,
            "apps:destroy": self.destroy_app,
            "deploy": self.deploy,
            "ps": self.ps,
            "ps:scale": self.scale,
            "restart": self.restart,
            "stop": self.stop,
            "start": self.start,
            "logs": self.logs,
            "config": self.config,
            "config:get": self.config_get,
            "config:set": self.config_set,
            "config:unset": self.config_unset,
            "run": self.run_once,
            "releases": self.releases,
            "releases:output": self.release_output,
            "rollback": self.rollback,
            "domains": self.domains,
            "domains:add": self.domains_add,
            "domains:remove": self.domains_remove,
            "git:repo": self.git_repo,
        }
        mux = self.runtime.mux
        self.postgres = Postgres(settings, spawner, mux)
        self.databases = DatabaseCommands(
            self.postgres,
            lambda: self.settings,
            self._app,
            mux,
            spawner,
            lambda: self.backups.storage(),  # noqa: PLW0108 (self.backups is made next)
        )
        self._commands.update(self.databases.handlers())
        self.backups = BackupCommands(
            lambda: self.settings, self.store, self._app, lambda: self.apps, self.databases, mux
        )
        self._commands.update(self.backups.handlers())
        keys = SshKeyCommands(self._authorized_keys, self._entrypoint)
        self._commands.update(keys.handlers())

    def _make_proxy(self, spawner: Spawner) -> tuple[NginxProxy | None, str | None]:
        """The managed nginx, or None (with the reason when nginx was asked for)."""
        settings = self.settings
        if settings.nginx == "off":
            return None, None
        binary = settings.nginx_binary or find_nginx()
        if binary is not None and not os.access(binary, os.X_OK):
            binary = None
        if binary is None or not isinstance(spawner, OsSpawner):
            if settings.nginx == "auto":
                return None, None
            problem = "nginx is not installed (apt install nginx); running with DOKUEN_NGINX=off"
            log.warning("nginx.missing", problem=problem)
            return None, problem
        port = settings.listen_port
        managed = Managed(settings.home / "nginx", listen_directive(settings.http_addr, port))
        system = settings.nginx == "system"
        proxy = NginxProxy(managed, port, binary, self._sites, spawner, self.runtime.mux, system)
        return proxy, None

    def _sites(self) -> list[Site]:
        """Every app nginx should show; an app whose files were hand-edited into something
        invalid is left out (and said so), not allowed to block the others."""
        sites = []
        for app in self.apps.values():
            try:
                sites.append(app.site())
            except DokuenError as exc:
                self.runtime.mux.event(app.name, f"left out of nginx: {exc}")
        return sites

    async def _sync_proxy(self) -> None:
        """Wait until nginx shows the current state; raise if it refused the new config."""
        if self.proxy is not None:
            await self.proxy.sync()

    # -- the task tree ---------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until SIGTERM/SIGINT (or cancellation), then stop every app and return."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
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
        log.info("daemon.stopped")

    async def _run_root(
        self, outer: anyio.abc.TaskGroup, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        """The control socket and the apps, until SIGTERM/SIGINT cancels them."""
        async with anyio.create_task_group() as root:
            # Signals are handled outside `root`, so a second SIGTERM or ^C while the
            # apps stop finds a handler, not the default action that would kill us.
            outer.start_soon(self._handle_signals, root.cancel_scope)
            listen = functools.partial(
                serve, group=socket_group(), warnings=self.backups.scheduler.warnings
            )
            await root.start(listen, self.settings.socket, self.handle)
            root.start_soon(self._reap_orphans)
            if self.proxy is not None:
                await root.start(self.proxy.run)
            async with anyio.create_task_group() as apps:
                self._apps_group = apps
                await self.postgres.settle()  # apps that connect at boot find it up
                await self._restore()
                await root.start(self.backups.scheduler.run)
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

    async def _restore(self) -> None:
        assert self._apps_group is not None
        await anyio.to_thread.run_sync(self._clear_scratch)
        await anyio.to_thread.run_sync(self._refresh_entrypoints)
        for name in self.store.app_names():
            app = App(self.store.app(name), self.runtime)
            await self._apps_group.start(app.run)
            self.apps[name] = app
        async with self.runtime.proxy_batch(), anyio.create_task_group() as restores:
            for app in self.apps.values():
                restores.start_soon(self._restore_app, app)
        try:
            await self._sync_proxy()
        except DokuenError as exc:
            log.error("nginx.restore_failed", error=str(exc))

    def _clear_scratch(self) -> None:
        """Dumps and bundles a killed dokuend left half made (a whole database each)."""
        for leftover in (self.settings.home / "tmp").glob("*-*"):
            if leftover.name.startswith(("backup-", "bundle-")):
                shutil.rmtree(leftover, ignore_errors=True)

    def _refresh_entrypoints(self) -> None:
        """Give every app its repository (apps made before there were any get one now) and
        write the hooks and authorized_keys again for the dokuenctl installed now."""
        try:
            entrypoint = self._entrypoint()
            hooks = repo.render_hooks(entrypoint)
            if sshkeys.refresh(self._authorized_keys, entrypoint):
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

    async def _restore_app(self, app: App) -> None:
        try:
            await app.restore()
        except Exception as exc:  # one app's bad files must not keep the others down
            self.runtime.mux.event(app.name, f"could not be restored: {exc}")
            log.exception("app.restore_failed", app=app.name)

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
        }
        with anyio.open_signal_receiver(*handlers) as signals:
            async for signum in signals:
                log.info("daemon.signal", signal=signal.Signals(signum).name)
                handlers[signal.Signals(signum)]()

    async def _reap_orphans(self) -> None:
        """Reap orphans we adopted as subreaper that died while their process lives on
        (a `(cmd &)` in a loop). uvloop keeps SIGCHLD for itself, so this looks every few
        seconds: one read of /proc/self/task/*/children, nothing when there is none."""
        spawner = self.runtime.spawner
        if not isinstance(spawner, OsSpawner) or not spawner.subreaper:
            return
        while True:
            await anyio.sleep(REAP_INTERVAL)
            reaper.reap_strays(spawner.live)

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

    def _app(self, args: dict[str, Any]) -> App:
        name = check_app_name(text_arg(args, "app"))
        try:
            return self.apps[name]
        except KeyError:
            error = not_found("app", name, self.apps)
            raise type(error)(f"{error} (create it with: dokuenctl apps:create {name})") from None

    def _status_line(self) -> str:
        """The service manager's STATUS: ``3 apps, 7/8 processes running``."""
        summaries = [app.summary() for app in self.apps.values()]
        running = sum(s["running"] for s in summaries)
        processes = sum(s["processes"] for s in summaries)
        apps = "1 app" if len(summaries) == 1 else f"{len(summaries)} apps"
        return f"{apps}, {running}/{processes} processes running"

    async def status(self, args: dict[str, Any], out: Output) -> Any:
        summaries = [app.summary() for app in self.apps.values()]
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 1),
            "home": str(self.settings.home),
            "apps": len(summaries),
            "processes": sum(s["processes"] for s in summaries),
            "running": sum(s["running"] for s in summaries),
            "crashed": sum(s["crashed"] for s in summaries),
            "nginx": self._nginx_status(),
            "postgres": self.postgres.status(),
            "service": self.service.info(),
            "urls": {app.name: self._url(app) for app in self.apps.values()},
            "backups": {
                "target": self.settings.backup_url,
                "scheduled": sorted(self.backups.scheduler.schedules),
                "failing": self.backups.scheduler.warnings(),
            },
        }

    def _nginx_status(self) -> dict[str, Any]:
        if self.proxy is None:
            return {"mode": "off", "problem": self.proxy_problem}
        return {
            "mode": "system" if self.proxy.system else "managed",
            "listen": self.proxy.managed.listen,
            "pid": self.proxy.master_pid,
            "problem": self.proxy.problem,
        }

    def _url(self, app: App) -> str | None:
        """Where the app answers: through nginx, or (off) its first web process's port."""
        try:
            return self._app_url(app)
        except DokuenError:  # a hand-edited bad file: status still answers for the rest
            return None

    def _app_url(self, app: App) -> str | None:
        if self.proxy is None:
            ports = app.site().ports
            return f"http://127.0.0.1:{ports[0]}/" if ports else None
        port = self.settings.listen_port
        return f"http://{app.hosts()[0]}{'' if port == 80 else f':{port}'}/"

    async def list_apps(self, args: dict[str, Any], out: Output) -> Any:
        return [
            {**self.apps[name].summary(), "url": self._url(self.apps[name])}
            for name in sorted(self.apps)
        ]

    async def create_app(self, args: dict[str, Any], out: Output) -> Any:
        name = check_app_name(text_arg(args, "app"))
        async with self._creating:
            app = await self._create(name, "created")
        return {"name": name, "repo": str(app.dir.repo)}

    async def _create(self, name: str, event: str) -> App:
        """Make the app, its repository included; hold ``_creating`` around the call."""
        hooks = repo.render_hooks(self._entrypoint())  # before anything touches the disk

        def prepare(directory: AppDir) -> None:
            repo.ensure_repo(directory.repo, hooks)

        directory = await anyio.to_thread.run_sync(self.store.create, name, prepare)
        app = App(directory, self.runtime)
        assert self._apps_group is not None
        await self._apps_group.start(app.run)
        self.apps[name] = app
        self.runtime.mux.event(name, event)
        self.runtime.proxy_changed()
        await self._sync_proxy()
        return app

    async def destroy_app(self, args: dict[str, Any], out: Output) -> Any:
        app = self._app(args)
        if args.get("confirm") != app.name:
            raise InvalidName(
                f"destroying {app.name!r} deletes its releases and config; "
                f"confirm with: dokuenctl apps:destroy {app.name} --confirm {app.name}"
            )
        if app.dir.database_file.exists():
            raise Conflict(
                f"{app.name} has a PostgreSQL database; destroy it first (after a last "
                f"dokuenctl backups:capture {app.name}, maybe): dokuenctl pg:destroy "
                f"{app.name} --confirm {app.name}"
            )
        del self.apps[app.name]  # new requests for it fail from now on
        self.backups.scheduler.forget(app.name)
        await app.close()
        await anyio.to_thread.run_sync(self.store.destroy, app.name)
        self.runtime.mux.event(app.name, "destroyed")
        self.runtime.proxy_changed()
        await self._sync_proxy()
        return {"name": app.name}

    async def deploy(self, args: dict[str, Any], out: Output) -> Any:
        app = self._app(args)
        source = Path(text_arg(args, "dir"))
        if not source.is_absolute():
            raise ProtocolError("deploy needs an absolute directory path")
        commit = args.get("commit")
        if commit is not None and not re.fullmatch(
            r"[0-9a-f]{40}|[0-9a-f]{64}", text_arg(args, "commit")
        ):
            raise ProtocolError("argument 'commit' must be a full commit id (SHA-1 or SHA-256)")
        release = await app.deploy(source, _speaker(out), commit, out.wait_closed)
        await self._sync_proxy()
        return {"release": release}

    async def run_once(self, args: dict[str, Any], out: Output) -> Any:
        app = self._app(args)
        command = text_arg(args, "line")
        if not command.strip():
            raise InvalidName("nothing to run (give a command, e.g. dokuenctl run blog env)")
        return {"status": await app.run_once(command, _speaker(out, end=""), out.wait_closed)}

    async def releases(self, args: dict[str, Any], out: Output) -> Any:
        return self._app(args).release_list()

    async def release_output(self, args: dict[str, Any], out: Output) -> Any:
        target = args.get("release")
        if target is not None:
            _check_release_name(text_arg(args, "release"))
        return await anyio.to_thread.run_sync(self._app(args).build_log, target)

    async def rollback(self, args: dict[str, Any], out: Output) -> Any:
        app = self._app(args)
        target = args.get("release")
        if target is not None:
            _check_release_name(text_arg(args, "release"))
        release = await app.rollback(target, _speaker(out))
        await self._sync_proxy()
        return {"release": release}

    async def ps(self, args: dict[str, Any], out: Output) -> Any:
        apps = [self._app(args)] if args.get("app") else [self.apps[n] for n in sorted(self.apps)]
        return [{**row, "url": self._url(app)} for app in apps for row in app.processes()]

    async def scale(self, args: dict[str, Any], out: Output) -> Any:
        app = self._app(args)
        changes = args.get("changes")
        if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
            raise ProtocolError("argument 'changes' must be a list of 'TYPE=N' strings")
        formation = await app.scale(changes)
        await self._sync_proxy()
        return formation

    async def restart(self, args: dict[str, Any], out: Output) -> Any:
        app = self._app(args)
        target = args.get("target")
        if target is not None:
            parse_process_name(text_arg(args, "target"))
        names = await app.restart(target)
        await self._sync_proxy()
        return names

    async def stop(self, args: dict[str, Any], out: Output) -> Any:
        await self._app(args).stop()
        await self._sync_proxy()
        return None

    async def start(self, args: dict[str, Any], out: Output) -> Any:
        await self._app(args).start()
        await self._sync_proxy()
        return None

    async def config(self, args: dict[str, Any], out: Output) -> Any:
        return self._app(args).config()

    async def config_get(self, args: dict[str, Any], out: Output) -> Any:
        app = self._app(args)
        key = check_config_key(text_arg(args, "key"))
        config = app.config()
        if key not in config:
            raise not_found("config var", key, config)
        return config[key]

    async def config_set(self, args: dict[str, Any], out: Output) -> Any:
        app = self._app(args)
        values = args.get("values")
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise ProtocolError("argument 'values' must be an object of strings")
        await app.set_config(values, [])
        return sorted(values)

    async def config_unset(self, args: dict[str, Any], out: Output) -> Any:
        app = self._app(args)
        keys = args.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ProtocolError("argument 'keys' must be a list of strings")
        await app.set_config({}, keys)
        return sorted(keys)

    async def logs(self, args: dict[str, Any], out: Output) -> Any:
        """The last N lines, then (with ``follow``) every new line until the client leaves."""
        name = args.get("app")
        if name in (NGINX_APP, POSTGRES_APP) and name not in self.apps:
            app: str | None = name  # the servers dokuend runs have lines of their own
        else:
            app = self._app(args).name if name else None
        process_type, index = None, None
        if args.get("ps"):
            process_type, index = parse_process_name(text_arg(args, "ps"))
        count = args.get("lines", 100)
        if not isinstance(count, int) or count < 0:
            raise ProtocolError("argument 'lines' must be a whole number")
        wanted = LogFilter(app, process_type, index)
        mux = self.runtime.mux
        follower, fd, end = mux.follow(wanted, count)
        try:
            try:
                older = await anyio.to_thread.run_sync(tail, fd, end, count, wanted)
            finally:
                os.close(fd)
            # Split on newlines only: a bare "\r" (a progress bar) is part of its line.
            recent = (older + follower.backlog).split(b"\n")[:-1][-count:] if count else []
            await out.write("".join(line.decode(errors="replace") + "\n" for line in recent))
            if args.get("follow"):
                async with anyio.create_task_group() as tg:
                    # A client that leaves is noticed at once, not at the next line it
                    # wanted (which, for a quiet app, may never come).
                    tg.start_soon(cancel_when, out.wait_closed, tg.cancel_scope)
                    async for batch in follower:
                        await out.write(batch.decode(errors="replace"))
                    if follower.dropped:
                        await out.write(
                            "dokuen: this reader fell too far behind and was dropped; "
                            "run 'dokuenctl logs -f' again\n"
                        )
                    tg.cancel_scope.cancel()
        finally:
            mux.unfollow(follower)
        return None

    async def domains(self, args: dict[str, Any], out: Output) -> Any:
        return self._app(args).hosts()

    async def domains_add(self, args: dict[str, Any], out: Output) -> Any:
        app = self._app(args)
        domain = check_domain(text_arg(args, "domain"))
        for other in self.apps.values():
            if domain in other.hosts():
                raise Conflict(f"domain {domain!r} already belongs to app {other.name!r}")
        await app.set_domains([*app.dir.read_domains(), domain])
        await self._sync_proxy()
        return app.hosts()

    async def domains_remove(self, args: dict[str, Any], out: Output) -> Any:
        app = self._app(args)
        domain = check_domain(text_arg(args, "domain"))
        domains = app.dir.read_domains()
        if domain not in domains:
            raise not_found("domain", domain, domains)
        await app.set_domains([d for d in domains if d != domain])
        await self._sync_proxy()
        return app.hosts()

    # -- git push and ssh keys ---------------------------------------------------------

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

    async def git_repo(self, args: dict[str, Any], out: Output) -> Any:
        """The app's repository for ``git-receive-pack`` (made now if it is missing); with
        ``create``, the app too when there is none yet: the first push creates it."""
        name = check_app_name(text_arg(args, "app"))
        key = check_ssh_key_name(text_arg(args, "key")) if "key" in args else None
        created = False
        async with self._creating:
            if name not in self.apps and args.get("create") is True:
                await self._create(name, f"created by a push over ssh (key {key})")
                created = True
        app = self._app(args)
        hooks = repo.render_hooks(self._entrypoint())
        if await anyio.to_thread.run_sync(repo.ensure_repo, app.dir.repo, hooks):
            log.info("git.repo_created", app=name)
        if key is not None:
            self.runtime.mux.event(name, f"push over ssh by key {key}")
        return {"path": str(app.dir.repo), "created": created}
