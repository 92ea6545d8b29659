"""nginx in front of every app, the I/O half: dokuend's own nginx master (managed mode) or a
system nginx's included files (system mode), kept in step with the running web processes.

Changes are coalesced: every ``changed()`` that arrives while an apply is pending costs one
render, one ``nginx -t`` of the whole new tree and one reload. A tree that fails the check
never replaces the live files; the error reaches the log and whoever awaits ``sync()``.
"""

import contextlib
import os
import shlex
import shutil
import time
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.abc

from dokuen.errors import DokuenError, explain
from dokuen.events import get_logger
from dokuen.proxy.accesslog import AccessLog
from dokuen.proxy.master import (
    adopt_master,
    record_master,
    reload_master,
    restore_pid_file,
    stop_master,
    watch,
)
from dokuen.proxy.nginx import (
    Https,
    Managed,
    Site,
    listen_directive,
    render_main,
    render_system_include,
)
from dokuen.proxy.prefixwatch import keep_whole
from dokuen.proxy.router import ACCESS_LOG
from dokuen.proxy.sitefiles import HTTPS_DEFAULT, SiteFiles
from dokuen.settings import Settings
from dokuen.supervise.keeper import AdoptedChild, Keeper
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.ports import port_is_free
from dokuen.supervise.process import describe_exit
from dokuen.supervise.spawn import LoopChild, OsSpawner, PidfdChild

log = get_logger()

COALESCE = 0.02  # seconds to gather changes that arrive together into one reload
# (unless a sync() waits for them: a deploy's switch, which waits for nothing else)
NGINX_APP = "nginx"  # how nginx's own lines and events appear in the unified log
MAX_RESTART_DELAY = 30.0
FIRST_RESTART_DELAY = 0.5
SERVED = 1.0  # seconds a master must have run for its death not to count as a failed start
STOP_TIMEOUT = 10.0
RELOAD_TIMEOUT = 5.0
RELOAD_SETTLE = 1.0  # at most this long for old workers to go before sync() returns
# The system's master is not ours to watch: give its reload a moment before sync() returns.
SYSTEM_RELOAD_SETTLE = 0.2


def find_nginx() -> str | None:
    """The nginx binary: on PATH, or where Debian puts it (not on a non-root user's PATH)."""
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(path, os.X_OK)),
        None,
    )


def make_proxy(
    settings: Settings, spawner: object, sites: Callable[[], list[Site]], mux: LogMux
) -> "tuple[NginxProxy | None, str | None]":
    """The nginx DOKUEN_NGINX asks for, or None (with the reason when nginx was asked for
    and is missing). Only a real ``OsSpawner`` runs nginx (a daemon of fakes does not)."""
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
    https_port = settings.https_listen_port
    https = Https(
        listen_directive(settings.http_addr, https_port), https_port, settings.home / "acme"
    )
    managed = Managed(
        settings.home / "nginx", listen_directive(settings.http_addr, port), https=https
    )
    proxy = NginxProxy(managed, port, binary, sites, spawner, mux, settings.nginx == "system")
    return proxy, None


class NginxProxy:
    """Keeps nginx's app files current under ``$DOKUEN_HOME/nginx``: for its own master,
    which it runs and restarts (managed), or for the system's nginx (``system=True``),
    which includes ``dokuen-http.conf`` and is reloaded with ``nginx -s reload``."""

    def __init__(
        self,
        managed: Managed,
        port: int,
        binary: str,
        sites: Callable[[], list[Site]],
        spawner: OsSpawner,
        mux: LogMux,
        system: bool = False,
    ) -> None:
        self.system = system
        self.managed = managed
        self.port = port
        self.binary = binary
        self._sites = sites
        self._spawner = spawner
        self._mux = mux
        self._dirty = anyio.Event()
        self._awaited = anyio.Event()  # someone waits in sync(): no gathering, apply now
        self._requested = 0
        self._applied = 0
        self._error: DokuenError | None = None
        self._error_generation = -1
        self._done = anyio.Event()
        self._held: dict[str, int] = {}  # apps in a batch: how many batches each
        self.files = SiteFiles(managed, binary, spawner, router=not system, system=system)
        self._writing = anyio.Lock()  # the files have one writer at a time
        self.master_pid: int | None = None
        self.keeper: Keeper | None = None  # records the master, so a new dokuend adopts it
        self._adopted: AdoptedChild | None = None
        self.problem: str | None = None  # shown by `status` while nginx is not serving
        # Router lines: the managed master's access log, in a directory of dokuend's only.
        self.router = None if system else AccessLog(managed.prefix, mux, lambda: self.master_pid)

    # -- what the daemon calls -------------------------------------------------------

    def status(self) -> dict[str, object]:
        """What ``dokuenctl status`` shows of nginx."""
        return {
            "mode": "system" if self.system else "managed",
            "listen": self.managed.listen,
            "pid": self.master_pid,
            "problem": self.problem,
            "router": self.router.status() if self.router else None,
        }

    def changed(self) -> None:
        """Something that nginx shows changed (a web process came or went, a domain)."""
        self._requested += 1
        self._dirty.set()

    @contextlib.asynccontextmanager
    async def batch(self, app: str) -> AsyncIterator[None]:
        """Hold one app's changes while a batch of them happens (a scale of 10, its boot):
        nginx shows the app as it was until the batch ends, then all of it in one reload.
        Other apps' changes reach nginx meanwhile: no app waits for another's checks."""
        self._held[app] = self._held.get(app, 0) + 1
        try:
            yield
        finally:
            self._held[app] -= 1
            if not self._held[app]:
                del self._held[app]
                self.changed()

    async def sync(self) -> None:
        """Wait until every change so far is applied; raise DokuenError if nginx refused it."""
        generation = self._requested
        if self._applied < generation:
            self._awaited.set()
        while self._applied < generation:
            await self._done.wait()
        if self._error is not None and self._error_generation >= generation:
            raise self._error

    # -- the task --------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self._write_prefix()
        if self.system:
            self.changed()  # the first apply reloads the system's nginx
        elif self.keeper is not None and (
            adopted := await anyio.to_thread.run_sync(
                adopt_master, self.keeper, NGINX_APP, self.managed.prefix
            )
        ):
            # It serves the last map it was given: the apps' adopted processes keep those
            # ports. The next change writes the files and reloads it.
            self._adopted = adopted
        else:
            await self._apply(reload=False)
        async with anyio.create_task_group() as tg:
            if self.router is not None:
                await tg.start(self.router.run)
            if not self.system:
                await tg.start(self._supervise_master)
            tg.start_soon(keep_whole, self.managed.prefix, self._heal_prefix_now)
            task_status.started()
            while True:
                await self._dirty.wait()
                with anyio.move_on_after(COALESCE):
                    await self._awaited.wait()
                self._dirty, self._awaited = anyio.Event(), anyio.Event()
                generation = self._requested
                try:
                    await self._apply(reload=True)
                except DokuenError as exc:
                    log.error("nginx.apply_failed", error=str(exc))
                    self._mux.event(NGINX_APP, f"config not applied: {exc}")
                    self._error, self._error_generation = exc, generation
                self._applied = generation
                self._done.set()
                self._done = anyio.Event()

    def _write_prefix(self) -> None:
        """The directories under nginx/ and its main file (all of it derived data)."""
        for directory in ("apps", "logs", "temp"):
            (self.managed.prefix / directory).mkdir(parents=True, exist_ok=True)
        self._prepare_router()
        if self.system:
            include = self.managed.prefix / "dokuen-http.conf"
            include.write_text(render_system_include(self.managed))
        else:
            self.managed.config.write_text(render_main(self.managed))

    def _prepare_router(self) -> None:
        """Before nginx (root) opens the router log's name: at start, at every reload and
        every master start, so a link put there in between is cleared, never followed."""
        if self.router is not None:
            try:
                self.router.prepare()
            except OSError as exc:  # its task says so (status): the apps are served anyway
                log.error("router.unavailable", error=explain(exc))

    def _prefix_missing(self) -> bool:
        prefix = self.managed.prefix
        main = prefix / "dokuen-http.conf" if self.system else self.managed.config
        wanted = ("apps", "logs", "temp", *((ACCESS_LOG,) if self.router is not None else ()))
        return not all(p.exists() for p in (main, *(prefix / d for d in wanted)))

    async def _heal_prefix_now(self) -> bool:
        async with self._writing:
            return await self._heal_prefix()

    async def _heal_prefix(self) -> bool:
        """Make nginx/ again when someone deleted it (or a part); report it, then reload.
        False when it could not be made (the error is logged)."""
        if not self._prefix_missing():
            return True
        try:
            self._write_prefix()
            if self.master_pid is not None and not self.system:
                restore_pid_file(self.master_pid, self.managed.prefix)
        except OSError as exc:
            log.error("nginx.prefix_failed", error=explain(exc))
            return False
        log.warning("nginx.prefix_recreated", prefix=str(self.managed.prefix))
        self._mux.event(NGINX_APP, f"{self.managed.prefix} was deleted; made it again")
        self.files.live = {}  # the site files went with it: write them again
        self.changed()
        return True

    async def _apply(self, *, reload: bool, renonce: bool = False) -> None:
        """Write, check and load the config (with ``renonce``, even when it is the same but
        for a new nonce); a failed write (a full disk) is a DokuenError and the config nginx
        has keeps serving."""
        try:
            async with self._writing:
                await self._heal_prefix()
                await self._apply_tree(reload=reload, renonce=renonce)
        except OSError as exc:
            raise DokuenError(
                f"nginx config not written, the previous one keeps serving: {explain(exc)}"
            ) from exc

    async def _apply_tree(self, *, reload: bool, renonce: bool) -> None:
        sites = self._sites()
        files = self.files
        shown = {site.app: site for site in sites}
        shown.update((app, files.shown[app]) for app in self._held if app in files.shown)
        if self.router is not None:
            self.router.update(
                (site.app, dyno, port)
                for site in sites
                for dyno, port in zip(site.dynos, site.ports, strict=False)
            )
        texts = files.render(shown)
        if texts == files.live and files.live and not renonce:
            return
        https = self.managed.https
        opens_https = HTTPS_DEFAULT in texts and HTTPS_DEFAULT not in files.live
        if opens_https and https is not None and not port_is_free(https.port):
            raise DokuenError(
                f"port {https.port} is already in use, so nginx cannot serve HTTPS "
                "(free it, or set DOKUEN_HTTPS_PORT)"
            )
        texts = await files.write(shown)  # with a new nonce: the ids of a new cycle
        if self.system:
            files.unloaded = False
            try:
                await self._reload_system()
            except DokuenError:
                files.live = {}  # not loaded: the next change writes and reloads again
                raise
            self._mux.event(NGINX_APP, f"system nginx reloaded ({len(texts)} apps)")
            return
        if reload and self.master_pid is not None:
            files.unloaded = False
            if await self._reload(self.master_pid):
                self._mux.event(NGINX_APP, f"reloaded ({len(texts)} apps)")

    async def _reload_system(self) -> None:
        """``nginx -s reload`` for the system's nginx, which reads the files just written."""
        status, output = await self._spawner.run([self.binary, "-s", "reload"], self.managed.prefix)
        if status != 0:
            message = output.decode(errors="replace").strip().splitlines()
            self.problem = f"nginx -s reload failed: {' '.join(message[-2:])}"
            raise DokuenError(f"{self.problem} (is the system's nginx running?)")
        self.problem = None
        await anyio.sleep(SYSTEM_RELOAD_SETTLE)

    async def _reload(self, master: int) -> bool:
        """Reload the master; return once only workers with the new config accept. False
        when it is no longer our master (it died: the next one reads the new config)."""
        self._prepare_router()
        return await reload_master(master, self.managed.prefix, RELOAD_TIMEOUT, RELOAD_SETTLE)

    async def _supervise_master(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep the nginx master running; restart it (with backoff) if it dies. The first
        master may be one a dead dokuend left (adopted in ``run``)."""
        delay = FIRST_RESTART_DELAY
        argv = [self.binary, "-p", str(self.managed.prefix), "-c", str(self.managed.config)]
        while True:
            child: PidfdChild | LoopChild | AdoptedChild | None = self._adopted
            self._adopted = None
            if child is None and not port_is_free(self.port):
                self.problem = (
                    f"port {self.port} is already in use, so nginx cannot listen "
                    "(free it, or set DOKUEN_HTTP_PORT)"
                )
            else:
                if child is None:
                    if not self.files.unloaded:  # its ids would start again as another's
                        await self._renonce()
                    self._prepare_router()
                    child = await self._spawner(
                        f"exec {shlex.join(argv)}", {"PATH": os.defpath}, self.managed.prefix
                    )
                    self.files.unloaded = False
                    started = "master started"
                else:
                    started = "master adopted"
                self.master_pid, self.problem = child.pid, None
                record = None
                if self.keeper is not None:
                    record = record_master(self.keeper, NGINX_APP, child.pid, self.port)
                self._mux.event(NGINX_APP, f"{started}, pid {child.pid}, port {self.port}")
                task_status.started()
                task_status = anyio.TASK_STATUS_IGNORED
                began = time.monotonic()
                try:
                    status, output = await watch(child)
                    if time.monotonic() - began >= SERVED:  # it served: no backoff
                        delay = FIRST_RESTART_DELAY
                finally:
                    with anyio.CancelScope(shield=True):
                        await stop_master(child, STOP_TIMEOUT)
                        if record is not None and self.keeper is not None:
                            self.keeper.records.remove(record)
                self.master_pid = None
                last = output.decode(errors="replace").strip().splitlines()[-1:] or [""]
                self.problem = f"nginx {describe_exit(status)}: {last[0]}".rstrip(": ")
            self._mux.event(NGINX_APP, f"{self.problem}; retrying in {delay:g}s")
            log.error("nginx.down", problem=self.problem, retry=delay)
            task_status.started()
            task_status = anyio.TASK_STATUS_IGNORED
            await anyio.sleep(delay)
            delay = min(MAX_RESTART_DELAY, delay * 2)

    async def _renonce(self) -> None:
        """The files again with a new nonce, for a master of ours about to start on files
        that one may have loaded (after a crash, or an adopted master's end)."""
        try:
            await self._apply(reload=False, renonce=True)
        except DokuenError as exc:  # it starts all the same: its ids then rest on its pids
            log.error("nginx.renonce_failed", error=str(exc))
