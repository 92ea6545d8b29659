"""The daemon's requests on apps: ``apps*``, ``ps*``, ``restart``/``stop``/``start``,
``config*``, ``deploy``, ``run``, ``releases*``, ``rollback``, ``domains*``, ``logs`` and
``git:repo`` (what a push asks for first)."""

import contextlib
import re
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

import anyio

from dokuen.apps import releasing, renaming, views
from dokuen.apps.app import App
from dokuen.apps.claims import Claims
from dokuen.apps.logs import stream_logs
from dokuen.apps.runs import RunCommands
from dokuen.apps.runtime import Runtime
from dokuen.control import Command, Output, optional_arg, text_arg
from dokuen.deploy import repo
from dokuen.entrypoint import Entrypoint
from dokuen.errors import Conflict, DokuenError, InvalidName, ProtocolError
from dokuen.events import get_logger
from dokuen.names import (
    check_app_name,
    check_config_key,
    check_domain,
    check_new_app_name,
    check_ssh_key_name,
    not_found,
    parse_process_name,
)
from dokuen.store import AppDir, Store

log = get_logger()


def _speaker(out: Output, end: str = "\n") -> Callable[[str], Awaitable[None]]:
    """Output for the requester, each piece followed by ``end``. One that went away
    (Ctrl-C) must not stop a deploy half-way, so a closed connection is ignored."""

    async def say(text: str) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await out.write(text + end)

    return say


def _check_release_name(name: str) -> str:
    if not re.fullmatch(r"v[1-9][0-9]{0,8}", name):
        raise InvalidName(f"invalid release {name!r} (use vN, e.g. v3)")
    return name


def app_url(app: App, rows: list[dict[str, Any]] | None = None) -> str | None:
    """Where the app answers: through nginx, or (without it) its first web process's port;
    None when it has no web process or its files were edited by hand into something bad.
    ``rows``, the app's ``ps`` rows when the caller has them, spare reading its files."""
    try:
        if not app.runtime.proxied and rows is not None:
            up = [r for r in rows if r.get("type") == "web" and r.get("state") == "running"]
            port = next((r["port"] for r in sorted(up, key=lambda r: r["index"]) if r["port"]), 0)
            return f"http://127.0.0.1:{port}/" if port else None
        if not app.runtime.proxied:
            ports = app.site().ports
            return f"http://127.0.0.1:{ports[0]}/" if ports else None
        port = app.runtime.settings.listen_port
        return f"http://{app.hosts()[0]}{'' if port == 80 else f':{port}'}/"
    except DokuenError:  # a hand-edited bad file: status still answers for the rest
        return None


class AppCommands:
    """The requests on the daemon's apps; the daemon owns ``apps`` and their task group."""

    def __init__(
        self,
        apps: dict[str, App],
        runtime: Callable[[], Runtime],
        store: Store,
        start_app: Callable[[AppDir], Awaitable[App]],
        sync_proxy: Callable[[], Awaitable[None]],
        entrypoint: Callable[[], Entrypoint],
        forget: Callable[[str], None],
        servers: Collection[str],
        renamed: Callable[[str, str], Awaitable[list[str]]] | None = None,
    ) -> None:
        """``start_app`` runs a new app in the daemon's task group and adds it to ``apps``;
        ``forget`` is told of an app being destroyed (its backup schedule goes);
        ``servers`` are the programs dokuend runs whose log lines have an app name;
        ``renamed`` is told of an app renamed (its backups follow) and returns warnings."""
        self.apps = apps
        self._runtime = runtime  # read at each request: SIGHUP may change the settings
        self._store = store
        self._start_app = start_app
        self._sync_proxy = sync_proxy
        self._entrypoint = entrypoint
        self._forget = forget
        self._renamed = renamed
        self._servers = tuple(servers)  # compared with ==: the name may be any JSON value
        self._creating = anyio.Lock()  # one apps:create, first push or rename at a time
        self._claims = Claims(lambda: self._runtime().settings.domain)

    def handlers(self) -> dict[str, Command]:
        return {
            "apps": self.list_apps,
            "apps:create": self.create_app,
            "apps:destroy": self.destroy_app,
            "apps:rename": self.rename_app,
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
            **RunCommands(self.find, self._runtime).handlers(),
            "apps:info": self.info,
            "releases": self.releases,
            "releases:info": self.release_info,
            "releases:output": self.release_output,
            "rollback": self.rollback,
            "domains": self.domains,
            "domains:add": self.domains_add,
            "domains:remove": self.domains_remove,
            "git:repo": self.git_repo,
        }

    def find(self, args: dict[str, Any]) -> App:
        """The app a request names (``app``). Raises InvalidName or NotFound."""
        name = check_app_name(text_arg(args, "app"))
        try:
            return self.apps[name]
        except KeyError:
            error = not_found("app", name, self.apps)
            raise type(error)(f"{error} (create it with: dokuenctl apps:create {name})") from None

    async def list_apps(self, args: dict[str, Any], out: Output) -> Any:
        return [
            {
                **self.apps[name].summary(),
                "url": app_url(self.apps[name]),
                "maintenance": self.apps[name].dir.maintenance,
            }
            for name in sorted(self.apps)
        ]

    async def create_app(self, args: dict[str, Any], out: Output) -> Any:
        name = check_app_name(text_arg(args, "app"))
        async with self._creating:
            app = await self._create(name, "created")
        return {"name": name, "repo": str(app.dir.repo)}

    def _hooks(self) -> dict[str, str]:
        """The hooks of an app's repository (a post-receive one only with a backup target)."""
        return repo.render_hooks(
            self._entrypoint(), self._runtime().settings.backup_url is not None
        )

    async def _create(self, name: str, event: str) -> App:
        """Make the app, its repository included; hold ``_creating`` around the call."""
        check_new_app_name(name)
        self._claims.check_new_app(name, self.apps)
        hooks = self._hooks()  # before anything touches the disk
        with self._claims.arriving(name):
            return await self._make(name, event, hooks)

    async def _make(self, name: str, event: str, hooks: dict[str, str]) -> App:
        isolation = self._runtime().isolation

        def prepare(directory: AppDir) -> None:
            repo.ensure_repo(directory.repo, hooks)
            isolation.set_up_app(self._store.home, directory, name)  # its uids and modes

        directory = await anyio.to_thread.run_sync(self._store.create, name, prepare)
        app = await self._start_app(directory)
        self._runtime().mux.event(name, event)
        self._runtime().proxy_changed()
        await self._sync_proxy()
        return app

    async def destroy_app(self, args: dict[str, Any], out: Output) -> Any:
        app = self.find(args)
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
        self._forget(app.name)
        await app.close()
        await anyio.to_thread.run_sync(self._store.destroy, app.name)
        self._runtime().mux.event(app.name, "destroyed")
        self._runtime().proxy_changed()
        await self._sync_proxy()
        return {"name": app.name}

    async def rename_app(self, args: dict[str, Any], out: Output) -> Any:
        """Everything of the app follows its new name (renaming.py)."""
        app, new = self.find(args), check_new_app_name(text_arg(args, "new"))
        async with self._creating:  # no apps:create or first push of NEW meanwhile
            self._claims.check_new_app(new, self.apps, renamed=app.name)
            with self._claims.arriving(new):
                renamed = await renaming.rename(app, new, self.apps, self._store, self._start_app)
        warnings = renaming.stale_paths(renamed, app.dir)
        warnings += await self._renamed(app.name, new) if self._renamed else []
        self._runtime().proxy_changed()
        await self._sync_proxy()
        return {
            "name": new,
            "repo": str(renamed.dir.repo),
            "url": app_url(renamed),
            "warnings": warnings,
        }

    async def deploy(self, args: dict[str, Any], out: Output) -> Any:
        app = self.find(args)
        source = Path(text_arg(args, "dir"))
        if not source.is_absolute():
            raise ProtocolError("deploy needs an absolute directory path")
        commit = args.get("commit")
        if commit is not None and not re.fullmatch(
            r"[0-9a-f]{40}|[0-9a-f]{64}", text_arg(args, "commit")
        ):
            raise ProtocolError("argument 'commit' must be a full commit id (SHA-1 or SHA-256)")
        release = await releasing.deploy(app, source, _speaker(out), commit, out.wait_closed)
        await self._sync_proxy()
        return {"release": release, "url": app_url(app)}

    async def info(self, args: dict[str, Any], out: Output) -> Any:
        app = self.find(args)
        disk = args.get("disk", True) is not False  # `open` needs the URL, not a disk walk
        return await anyio.to_thread.run_sync(views.app_info, app, app_url(app), disk)

    async def releases(self, args: dict[str, Any], out: Output) -> Any:
        return views.release_list(self.find(args))

    async def release_info(self, args: dict[str, Any], out: Output) -> Any:
        name = _check_release_name(text_arg(args, "release"))
        return await anyio.to_thread.run_sync(views.release_info, self.find(args), name)

    async def release_output(self, args: dict[str, Any], out: Output) -> Any:
        target = args.get("release")
        if target is not None:
            _check_release_name(text_arg(args, "release"))
        return await anyio.to_thread.run_sync(views.build_log, self.find(args), target)

    async def rollback(self, args: dict[str, Any], out: Output) -> Any:
        app = self.find(args)
        target = args.get("release")
        if target is not None:
            _check_release_name(text_arg(args, "release"))
        force = args.get("force") is True
        done = await releasing.rollback(app, target, _speaker(out), force)
        await self._sync_proxy()
        return done

    async def ps(self, args: dict[str, Any], out: Output) -> Any:
        apps = [self.find(args)] if args.get("app") else [self.apps[n] for n in sorted(self.apps)]
        shown = []
        for app in apps:
            rows = [*app.processes(), *app.detached.rows()]  # run:detached last
            url = app_url(app, rows)  # once an app, not once a process
            shown += [{**row, "url": url} for row in rows]
        return shown

    async def scale(self, args: dict[str, Any], out: Output) -> Any:
        app = self.find(args)
        changes = args.get("changes")
        if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
            raise ProtocolError("argument 'changes' must be a list of 'TYPE=N' strings")
        formation = await app.scale(changes)
        await self._sync_proxy()
        return formation

    async def restart(self, args: dict[str, Any], out: Output) -> Any:
        app = self.find(args)
        target = optional_arg(args, "target")
        if target is not None:
            process_type, index = parse_process_name(target)
            if process_type == "run" and "run" not in app.dir.read_formation():
                raise InvalidName(  # run.N: a one-off, not a Procfile type called 'run'
                    f"detached runs do not restart; stop one with: dokuenctl ps:stop "
                    f"{app.name} run.{index or 'N'}, and start another with run:detached"
                )
        names = await app.restart(target)
        await self._sync_proxy()
        return {"restarted": names, "stuck": app.stuck()}

    async def stop(self, args: dict[str, Any], out: Output) -> Any:
        app = self.find(args)
        await app.detached.stop()  # run:detached processes stop with the app
        await app.stop()
        await self._sync_proxy()
        return {"stuck": app.stuck()}

    async def start(self, args: dict[str, Any], out: Output) -> Any:
        await self.find(args).start()
        await self._sync_proxy()
        return None

    async def config(self, args: dict[str, Any], out: Output) -> Any:
        return self.find(args).config()

    async def config_get(self, args: dict[str, Any], out: Output) -> Any:
        app = self.find(args)
        key = check_config_key(text_arg(args, "key"))
        config = app.config()
        if key not in config:
            raise not_found("config var", key, config)
        return config[key]

    async def config_set(self, args: dict[str, Any], out: Output) -> Any:
        app = self.find(args)
        values = args.get("values")
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise ProtocolError("argument 'values' must be an object of strings")
        release, restarted = await releasing.change_config(app, values, [])
        return {"keys": list(values), "release": release, "restarted": restarted}

    async def config_unset(self, args: dict[str, Any], out: Output) -> Any:
        app = self.find(args)
        keys = args.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ProtocolError("argument 'keys' must be a list of strings")
        release, restarted = await releasing.change_config(app, {}, keys)
        return {"keys": keys, "release": release, "restarted": restarted}

    async def logs(self, args: dict[str, Any], out: Output) -> Any:
        """The last N lines, then (with ``follow``) every new line until the client leaves."""
        name = args.get("app")
        if name in self._servers and name not in self.apps:
            app: str | None = name  # the servers dokuend runs have lines of their own
        else:
            app = self.find(args).name if name else None
        await stream_logs(self._runtime().mux, app, args, out)

    async def domains(self, args: dict[str, Any], out: Output) -> Any:
        return self.find(args).hosts()

    async def domains_add(self, args: dict[str, Any], out: Output) -> Any:
        app = self.find(args)
        domain = check_domain(text_arg(args, "domain"))

        def domains() -> list[str]:  # under the app's lock, written at once
            self._claims.check_domain(domain, self.apps)
            return [*app.dir.read_domains(), domain]

        await app.set_domains(domains)
        try:
            await self._sync_proxy()
        except DokuenError as exc:  # nginx refused it: kept, it would refuse every change after
            await app.set_domains(lambda: [d for d in app.dir.read_domains() if d != domain])
            with contextlib.suppress(DokuenError):
                await self._sync_proxy()
            raise type(exc)(f"domain {domain} was not added: {exc}") from None
        return app.hosts()

    async def domains_remove(self, args: dict[str, Any], out: Output) -> Any:
        app = self.find(args)
        domain = check_domain(text_arg(args, "domain"))
        domains = app.dir.read_domains()
        if domain not in domains:
            raise not_found("domain", domain, domains)
        await app.set_domains(lambda: [d for d in app.dir.read_domains() if d != domain])
        await self._sync_proxy()
        return app.hosts()

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
        app = self.find(args)
        hooks = self._hooks()
        if await anyio.to_thread.run_sync(repo.ensure_repo, app.dir.repo, hooks):
            log.info("git.repo_created", app=name)
        if key is not None:
            self._runtime().mux.event(name, f"push over ssh by key {key}")
        return {"path": str(app.dir.repo), "created": created}
