"""The PostgreSQL server the apps' databases live on, chosen by DOKUEN_POSTGRES:

- ``managed``: dokuend's own cluster (cluster.py), made and started at the first request
  that needs it, started with dokuend once it exists, stopped after the apps.
- ``external``: the server DOKUEN_POSTGRES_URL names, with a role that may create roles
  and databases.
- ``off``; ``auto`` (the default) is external when DOKUEN_POSTGRES_URL is set, else managed
  when PostgreSQL is installed, else off.
"""

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from dokuen.conninfo import ConnInfo, parse_url
from dokuen.data import sockets
from dokuen.data.account import cluster_user
from dokuen.data.cluster import (
    POSTGRES_APP,
    READY_POLL,
    ClusterPaths,
    ManagedCluster,
    PostgresUnavailable,
)
from dokuen.events import get_logger
from dokuen.settings import Settings
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.process import Spawner
from dokuen.supervise.spawn import OsSpawner

log = get_logger()

SERVER_PACKAGE = "postgresql"  # Debian's: the server and its client tools
CLIENT_PACKAGE = "postgresql-client"  # pg_dump, pg_restore and psql alone (external mode)
READY_TIMEOUT = 60.0  # seconds a request waits for the cluster to accept connections
SERVER_TOOLS = ("initdb", "postgres")
CLIENT_TOOLS = ("pg_dump", "pg_restore", "psql")


def find_bindir(configured: str | None) -> Path | None:
    """The directory of PostgreSQL's programs: DOKUEN_POSTGRES_BIN, else the newest
    ``/usr/lib/postgresql/N/bin`` (Debian keeps them off PATH), else where PATH's
    ``pg_dump`` really lives (Homebrew). None when none has ``pg_dump``."""
    if configured is not None:
        return Path(configured) if (Path(configured) / "pg_dump").is_file() else None
    versions = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", candidate.parent.name):
            versions.append((float(candidate.parent.name), candidate))
    for _version, candidate in sorted(versions, reverse=True):
        if (candidate / "pg_dump").is_file():
            return candidate
    found = shutil.which("pg_dump")
    if found is not None:
        real = Path(found).resolve()  # not Debian's pg_wrapper, which picks a cluster
        if real.name == "pg_dump":
            return real.parent
    return None


def has_server(bindir: Path | None) -> bool:
    return bindir is not None and all(os.access(bindir / name, os.X_OK) for name in SERVER_TOOLS)


def not_installed(bindir: Path | None, configured: str | None, server: bool) -> str:
    """Why PostgreSQL cannot be used, naming the Debian package to install."""
    package = SERVER_PACKAGE if server else CLIENT_PACKAGE
    where = f"in DOKUEN_POSTGRES_BIN={configured}" if configured else "installed"
    missing: tuple[str, ...] = SERVER_TOOLS if server else CLIENT_TOOLS
    if bindir is not None:
        missing = tuple(name for name in missing if not os.access(bindir / name, os.X_OK))
    return (
        f"PostgreSQL is not {where} (no {', '.join(missing)}): install Debian's "
        f"{package} package (apt install {package}), or set DOKUEN_POSTGRES_BIN"
    )


def choose_mode(setting: str, url: str | None, server: bool) -> tuple[str, str | None]:
    """What DOKUEN_POSTGRES=``setting`` comes to: (mode, why it cannot be used or None)."""
    if setting == "auto":
        if url is not None:
            return "external", None
        return ("managed", None) if server else ("off", "not installed")
    if setting == "managed" and not server:
        return "managed", "not installed"
    return setting, None


class Postgres:
    """The server as the daemon sees it: chosen once from the settings; the managed
    cluster starts at the first request that needs it (or at boot once it exists)."""

    def __init__(self, settings: Settings, spawner: Spawner, mux: LogMux) -> None:
        self.bindir = find_bindir(settings.postgres_bin)
        self._configured_bin = settings.postgres_bin
        self.mode, problem = choose_mode(
            settings.postgres, settings.postgres_url, has_server(self.bindir)
        )
        self.problem = None
        if problem is not None:
            self.problem = not_installed(self.bindir, settings.postgres_bin, server=True)
        self._apps_root = settings.home / "apps"
        self._mux = mux
        self._external: ConnInfo | None = None
        self._cluster: ManagedCluster | None = None
        if self.mode == "external":
            assert settings.postgres_url is not None
            self._external = parse_url(settings.postgres_url)
        elif self.mode == "managed" and self.problem is None:
            if not isinstance(spawner, OsSpawner):
                self.mode, self.problem = "off", "PostgreSQL needs real processes"
            else:
                assert self.bindir is not None
                self._cluster = ManagedCluster(
                    ClusterPaths(settings.home / "postgres"),
                    settings.postgres_port,
                    self.bindir,
                    cluster_user(settings.postgres_user, os.geteuid()),
                    spawner,
                    mux,
                    on_start=self._relink,
                )
        self._group: anyio.abc.TaskGroup | None = None
        self._running = False
        self._starting = anyio.Lock()
        self._start_error: str | None = None

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Hold the cluster's task until cancelled (cancellation stops it); start a cluster
        that exists already."""
        async with anyio.create_task_group() as group:
            self._group = group
            cluster = self._cluster
            if cluster is not None and cluster.paths.initialized:
                with contextlib.suppress(PostgresUnavailable):
                    await self._start()
            task_status.started()
            await anyio.sleep_forever()

    async def settle(self) -> None:
        """Wait (a while) until a cluster that is starting accepts connections or fails,
        so that apps find it at boot."""
        cluster = self._cluster
        if cluster is None or not self._running:
            return
        with anyio.move_on_after(READY_TIMEOUT):
            while not cluster.accepting and not cluster.down:
                await anyio.sleep(READY_POLL)

    async def _start(self) -> None:
        assert self._cluster is not None
        assert self._group is not None
        async with self._starting:
            if self._running:
                return
            try:
                await self._group.start(self._supervise, self._cluster)
            except PostgresUnavailable as exc:
                self._start_error = str(exc)
                log.error("postgres.unavailable", problem=str(exc))
                raise
            self._start_error = None

    async def _supervise(
        self,
        cluster: ManagedCluster,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        self._running = True
        try:
            await cluster.run(task_status=task_status)
        finally:
            self._running = False

    # -- what requests use -----------------------------------------------------------

    async def admin(self) -> ConnInfo:
        """A role that may create roles and databases, on a server that accepts
        connections now (a managed cluster is made and started first if need be).

        Raises:
            PostgresUnavailable: naming why (off, not installed, not running) and the fix.
        """
        if self._external is not None:
            return self._external
        cluster = self._cluster
        if cluster is None:
            raise PostgresUnavailable(self._why_off())
        await self._start()
        tried: int | None = None
        with anyio.move_on_after(READY_TIMEOUT):
            while not cluster.accepting:
                if cluster.down:
                    if tried is not None and cluster.attempts > tried:
                        break  # it was tried again for us, and failed again: say why
                    if tried is None:
                        tried = cluster.attempts
                        cluster.retry_now()
                await anyio.sleep(READY_POLL)
        if not cluster.accepting:
            why = cluster.problem or f"it does not accept connections ({cluster.last_error})"
            raise PostgresUnavailable(
                f"PostgreSQL is not running: {why} (see: dokuenctl logs {POSTGRES_APP})"
            )
        return await anyio.to_thread.run_sync(cluster.admin)

    def login(self, user: str, password: str, dbname: str) -> ConnInfo:
        """How dokuend itself reaches a database as a role (a managed cluster: its socket)."""
        if self._external is not None:
            return self._external.login(user, password, dbname)
        assert self._cluster is not None
        return ConnInfo(str(self._cluster.paths.run), self._cluster.port, user, dbname, password)

    def public(self, user: str, password: str, dbname: str, app_root: Path) -> ConnInfo:
        """How the app whose state is ``app_root`` (and people, with ``pg:psql``) reach
        it: the external server's own address, or the managed cluster's socket through
        the app's own directory (sockets.py), never TCP."""
        if self._external is not None:
            return self._external.login(user, password, dbname)
        assert self._cluster is not None
        directory = sockets.app_socket_dir(app_root)
        return ConnInfo(str(directory), self._cluster.port, user, dbname, password)

    def app_socket(self, app_root: Path, gid: int | None) -> None:
        """Give the app its own way in to the managed cluster (nothing for an external
        server): ``apps/APP/run/postgresql/``, group ``gid``, linked to the cluster's
        socket. Blocking; raises sockets.SocketError.

        Args:
            gid: the app's own group, as its processes run; None: dokuend's own gid.
        """
        if self._cluster is not None:
            sockets.prepare(app_root, self._cluster.paths.socket(self._cluster.port), gid)

    def _relink(self, socket: Path) -> None:
        """The cluster (re)started with a new socket: every app's link points at it."""
        for app in sockets.relink_all(self._apps_root, socket):
            self._mux.event(app, "cannot link PostgreSQL's new socket for this app")

    def tool(self, name: str) -> str:
        """The path of ``pg_dump``, ``pg_restore`` or ``psql``; raise naming the package."""
        if self.bindir is None or not os.access(self.bindir / name, os.X_OK):
            raise PostgresUnavailable(
                not_installed(self.bindir, self._configured_bin, server=False)
            )
        return str(self.bindir / name)

    def _why_off(self) -> str:
        if self.problem is not None:
            return self.problem
        return "PostgreSQL is off (DOKUEN_POSTGRES=off); set DOKUEN_POSTGRES=managed or external"

    def status(self) -> dict[str, Any]:
        """``problem`` is what needs fixing; ``reason`` why auto chose off."""
        if self.mode == "off":
            return {"mode": "off", "problem": None, "reason": self.problem}
        info: dict[str, Any] = {"mode": self.mode, "problem": self.problem}
        if self._external is not None:
            info["server"] = f"{self._external.host}:{self._external.port}"
        cluster = self._cluster
        if cluster is not None:
            if cluster.accepting:
                state = "running"
            elif not self._running:
                state = "not started" if cluster.paths.initialized else "not created yet"
            else:
                state = "down" if cluster.down else "starting"
            info.update(
                state=state,
                pid=cluster.pid,
                listen=str(cluster.paths.socket(cluster.port)),
                socket=str(cluster.paths.run),
                version=cluster.version,
                problem=cluster.problem or self._start_error,
            )
        return info
