"""dokuend's own PostgreSQL cluster under ``$DOKUEN_HOME/postgres/`` (DOKUEN_POSTGRES=managed):
made by initdb on first use (in ``data.new``, renamed ``data`` once whole), then run as a
supervised child: restarted with backoff when it dies, its log lines in the unified log
(``postgres[postgres]``), stopped with a fast shutdown.

It listens on no TCP port: only on the unix socket ``.s.PGSQL.DOKUEN_POSTGRES_PORT`` in
``postgres/run/`` (0700), which each app reaches through a link in a directory of its own
(sockets.py). PostgreSQL refuses to run as root, so a root dokuend runs it as its own
system account (account.py), which owns ``data/`` and ``run/`` and nothing else; the
directory ``postgres/`` itself is root's (0750, the account's group). Every login takes a
password (scram-sha-256), the superuser ``dokuen``'s too: it is kept in
``postgres/superuser.password``, 0600 and dokuend's (root's when it is root).
"""

import contextlib
import os
import pwd
import re
import shutil
import signal
import stat
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import psutil

from dokuen.conninfo import ConnInfo
from dokuen.data import account as accounts
from dokuen.data.sockets import SOCKET_PATH_MAX, socket_name
from dokuen.errors import DokuenError
from dokuen.events import get_logger
from dokuen.isolate.modes import permits
from dokuen.store import write_atomic
from dokuen.supervise.logmux import LineFramer, LogMux
from dokuen.supervise.process import describe_exit
from dokuen.supervise.spawn import LoopChild, OsSpawner, PidfdChild

log = get_logger()

POSTGRES_APP = "postgres"  # how the cluster's lines and events appear in the unified log
SUPERUSER = "dokuen"
READY_POLL = 0.05
FAST_SHUTDOWN_TIMEOUT = 30.0  # then SIGQUIT (immediate shutdown), then SIGKILL
MAX_RESTART_DELAY = 30.0
# Lines of the server's log that say why it stopped: its errors, but not those it sends
# to sessions (our own probes while it starts, the sessions a shutdown ends).
_SERVER_FAILURE = re.compile(
    r"\b(?:FATAL|PANIC):  (?!the database system is (?:starting up|shutting down)"
    r"|terminating connection due to administrator command)"
)


class PostgresUnavailable(DokuenError):
    """There is no PostgreSQL to use: off, not installed, or not running; the message says
    which and what to do."""


def unreachable_parent(path: Path, account: pwd.struct_passwd) -> Path | None:
    """The first parent of ``path`` that ``account`` may not pass through, if any."""
    for parent in reversed(path.parents):
        if not permits(parent.stat(), account.pw_uid, account.pw_gid, 1):
            return parent
    return None


@dataclass(frozen=True)
class ClusterPaths:
    root: Path  # $DOKUEN_HOME/postgres

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def run(self) -> Path:
        """The unix socket's directory (and its lock file)."""
        return self.root / "run"

    @property
    def password_file(self) -> Path:
        return self.root / "superuser.password"

    @property
    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def socket(self, port: int) -> Path:
        return self.run / socket_name(port)


class ManagedCluster:
    """dokuend's own cluster: made on first use, kept running, stopped fast."""

    def __init__(
        self,
        paths: ClusterPaths,
        port: int,
        bindir: Path,
        user: str | None,
        spawner: OsSpawner,
        mux: LogMux,
        on_start: Callable[[Path], None] = lambda _socket: None,
    ) -> None:
        """``on_start(socket)`` runs (in a worker thread) each time the server has started,
        before it is said to accept connections: the apps' links to its new socket."""
        self.paths = paths
        self.port = port
        self.bindir = bindir
        self.user = user  # None: dokuend's own user
        self._on_start = on_start
        self._spawner = spawner
        self._mux = mux
        self.pid: int | None = None
        self.accepting = False
        self.problem: str | None = None
        self.version: str | None = None
        self.last_error: str | None = None  # why the last try to connect failed
        self.attempts = 0  # lives begun
        self._retry = anyio.Event()
        self._recent: deque[str] = deque(maxlen=20)

    def admin(self) -> ConnInfo:
        """The superuser, over the unix socket."""
        password = self.paths.password_file.read_text(encoding="utf-8").strip()
        return ConnInfo(str(self.paths.run), self.port, SUPERUSER, "postgres", password)

    # -- the task --------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Make the cluster if it is new, start it, and keep it running until cancelled.

        Raises PostgresUnavailable (before it is started) when the cluster cannot be made;
        later failures are kept in ``problem`` and retried with backoff.
        """
        await anyio.to_thread.run_sync(self._prepare)
        if not self.paths.initialized:
            await self._initdb()
        elif self.user is not None:
            await self._stop_stale()  # before its files change owner under it
            await anyio.to_thread.run_sync(self._adopt)
        task_status.started()
        delay = 0.5
        while True:
            began = time.monotonic()
            try:
                self.problem = await self._life()
            except (DokuenError, OSError) as exc:
                self.problem = f"cannot start PostgreSQL: {exc}"
            except Exception as exc:  # a bug here must not stop the daemon and its apps
                log.exception("postgres.failed")
                self.problem = f"internal error in dokuend: {exc!r}"
            if time.monotonic() - began > MAX_RESTART_DELAY:
                delay = 0.5  # it ran a good while: this is a new failure, not a loop
            self._mux.event(POSTGRES_APP, f"{self.problem}; restarting in {delay:g}s")
            log.error("postgres.down", problem=self.problem, retry=delay)
            with anyio.move_on_after(delay):
                await self._retry.wait()  # or sooner, when a request wants it
            self._retry = anyio.Event()
            delay = min(MAX_RESTART_DELAY, delay * 2)

    def retry_now(self) -> None:
        """Cut short the wait before the next start (the port may be free by now)."""
        self._retry.set()

    @property
    def down(self) -> bool:
        """Between two tries to start it, after one failed."""
        return self.pid is None and self.problem is not None

    def _prepare(self) -> None:
        """Directories with the right owners; refuse paths PostgreSQL cannot use."""
        socket = self.paths.socket(self.port)
        if len(str(socket).encode()) > SOCKET_PATH_MAX:
            raise PostgresUnavailable(
                f"the PostgreSQL socket path {socket} is longer than {SOCKET_PATH_MAX} bytes "
                "(move DOKUEN_HOME to a shorter path)"
            )
        self.paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.paths.run.mkdir(mode=0o700, exist_ok=True)
        self.paths.run.chmod(0o700)  # a 0.1 cluster's, or a hand-made one, may be wider
        if self.user is None:
            self.paths.root.chmod(0o700)
            return
        account = accounts.ensure_account(self.user)
        # root's, and the account's group may pass through to data/ and run/ (nobody else).
        os.chown(self.paths.root, os.geteuid(), account.pw_gid)
        self.paths.root.chmod(0o750)
        blocked = unreachable_parent(self.paths.run, account)
        if blocked is not None:
            mode = stat.S_IMODE(blocked.stat().st_mode)
            raise PostgresUnavailable(
                f"PostgreSQL runs as {self.user} (it refuses root), who cannot reach "
                f"{self.paths.root}: {blocked} is mode {mode:o} (chmod o+x {blocked}, or "
                "move DOKUEN_HOME)"
            )
        os.chown(self.paths.run, account.pw_uid, account.pw_gid)

    def _adopt(self) -> None:
        """Give the cluster's files to the account it runs as now: a cluster that another
        account ran (Dokuen 0.1's ran as ``postgres``) moves over, once, here."""
        assert self.user is not None
        account = pwd.getpwnam(self.user)
        owner = self.paths.data.lstat().st_uid
        if owner == account.pw_uid:
            return
        try:
            before = pwd.getpwuid(owner).pw_name
        except KeyError:
            before = f"uid {owner}"
        changed = accounts.adopt(self.paths.data, account)
        self._mux.event(
            POSTGRES_APP,
            f"the cluster's {changed} files moved from user {before} to {self.user}",
        )

    async def _initdb(self) -> None:
        """A new cluster in ``data.new``, renamed to ``data`` only once initdb succeeded (so
        a failed one is simply made again)."""
        import secrets  # noqa: PLC0415 (hmac links libcrypto: not at start)

        fresh = self.paths.root / "data.new"
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(fresh, ignore_errors=True))
        fresh.mkdir(mode=0o700)
        password = secrets.token_urlsafe(32)
        write_atomic(self.paths.password_file, password + "\n", mode=0o600)
        secret = self.paths.root / "initdb.password"  # initdb reads it as the cluster's user
        write_atomic(secret, password + "\n", mode=0o600)
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            for path in (fresh, secret):
                os.chown(path, account.pw_uid, account.pw_gid)
        argv = [
            str(self.bindir / "initdb"),
            f"--pgdata={fresh}",
            f"--username={SUPERUSER}",
            f"--pwfile={secret}",
            "--auth-local=scram-sha-256",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
        ]
        self._mux.event(POSTGRES_APP, f"initdb: making a new cluster in {self.paths.data}")
        try:
            status, output = await self._spawner.run(argv, self.paths.root, user=self.user)
        finally:
            secret.unlink(missing_ok=True)
        if status != 0:
            lines = output.decode(errors="replace").strip().splitlines()
            raise PostgresUnavailable(f"initdb {describe_exit(status)}: {' '.join(lines[-3:])}")
        fresh.rename(self.paths.data)
        self._mux.event(POSTGRES_APP, "initdb: done")

    async def _life(self) -> str:
        """Run the postmaster once; return why it ended. Cancelled: stop it (fast)."""
        self.accepting = False
        self.attempts += 1
        self.problem = None
        await self._stop_stale()
        argv = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.paths.data),
            "-p",
            str(self.port),
            "-k",
            str(self.paths.run),
            "-c",
            "listen_addresses=",  # no TCP: only the socket, which only apps' links reach
            "-c",
            "unix_socket_permissions=0777",  # the directories are the boundary, not this
            "-c",
            "log_line_prefix=[%p] ",  # the unified log stamps each line itself
        ]
        child = await self._spawner.exec(
            argv, {"PATH": os.defpath}, self.paths.root, user=self.user
        )
        self.pid, self.problem = child.pid, None
        self._recent.clear()
        self._mux.event(POSTGRES_APP, f"started, pid {child.pid}, port {self.port}")
        status: int | None = None
        pumped = anyio.Event()
        # Shielded so that a stop does not cut off the lines of the shutdown itself.
        pump_scope = anyio.CancelScope(shield=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pump, child, pump_scope, pumped)
            tg.start_soon(self._watch_ready)
            try:
                status = await child.wait()
            finally:
                self.accepting = False
                with anyio.CancelScope(shield=True):
                    stopping = status is None
                    if status is None:
                        status = await self._shutdown(child)
                    with anyio.move_on_after(1):  # unless a straggler holds the pipe
                        await pumped.wait()
                    pump_scope.cancel()
                    await child.aclose()
                    self.pid = None
                    if stopping:
                        self._mux.event(POSTGRES_APP, f"stopped ({describe_exit(status)})")
            tg.cancel_scope.cancel()
        assert status is not None  # from wait() or, on a stop, from _shutdown()
        said = [line for line in self._recent if _SERVER_FAILURE.search(line)]
        last = " / ".join(said[-2:])
        return f"PostgreSQL {describe_exit(status)}" + (f": {last}" if last else "")

    async def _pump(
        self, child: PidfdChild | LoopChild, scope: anyio.CancelScope, pumped: anyio.Event
    ) -> None:
        """The server's own log lines into the unified log."""
        framer = LineFramer()
        try:
            with scope:
                while chunk := await child.read(1 << 16):
                    lines = framer.feed(chunk)
                    self._recent.extend(line.decode(errors="replace") for line in lines[-20:])
                    self._mux.write(POSTGRES_APP, POSTGRES_APP, lines)
        finally:
            self._mux.write(POSTGRES_APP, POSTGRES_APP, framer.flush())
            pumped.set()

    async def _watch_ready(self) -> None:
        from dokuen.data.database import connect  # noqa: PLC0415 (psycopg only once it runs)

        admin = self.admin()
        while True:
            try:
                async with connect(admin, wait=2) as conn:
                    cursor = await conn.execute("SHOW server_version")
                    row = await cursor.fetchone()
                break
            except DokuenError as exc:
                self.last_error = str(exc)
                await anyio.sleep(READY_POLL)
        self.version = str(row[0]).split()[0] if row else None  # 15.18, not its packager's
        await anyio.to_thread.run_sync(self._on_start, self.paths.socket(self.port))
        self.accepting = True
        self._mux.event(POSTGRES_APP, f"accepting connections (PostgreSQL {self.version})")

    async def _shutdown(self, child: PidfdChild | LoopChild) -> int:
        """Fast shutdown (SIGINT to the postmaster: sessions end, a checkpoint is written);
        immediate (SIGQUIT) after the timeout; SIGKILL to the group as the last resort."""
        for signum, patience in (
            (signal.SIGINT, FAST_SHUTDOWN_TIMEOUT),
            (signal.SIGQUIT, 5.0),
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)
            with anyio.move_on_after(patience):
                return await child.wait()
            log.warning("postgres.slow_shutdown", signal=signal.Signals(signum).name)
        child.signal_group(signal.SIGKILL)
        return await child.wait()

    async def _stop_stale(self) -> None:
        """A postmaster of our data directory left by a dokuend that died (it keeps
        ``postmaster.pid``, and a new one would refuse to start): fast-shut it down."""
        pid = _postmaster_pid(self.paths.data)
        if pid is None:
            return
        try:
            process = psutil.Process(pid)
            if str(self.paths.data) not in process.cmdline():
                return
        except psutil.Error:
            return
        self._mux.event(POSTGRES_APP, f"stopping pid {pid}, a PostgreSQL left running earlier")
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGINT)
        with anyio.move_on_after(FAST_SHUTDOWN_TIMEOUT):
            while process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                await anyio.sleep(0.05)
        with contextlib.suppress(psutil.Error):
            if process.is_running():
                process.kill()


def _postmaster_pid(data: Path) -> int | None:
    try:
        first = (data / "postmaster.pid").read_text().split("\n", 1)[0].strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(first) if first.isdigit() else None
