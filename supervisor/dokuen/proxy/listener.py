"""Router lines, the I/O half: one task reads nginx's datagrams off the router socket
(``$DOKUEN_HOME/nginx/router.sock``) and hands each parsed line to the log multiplexer.

nginx's workers send without blocking, so a reader that falls behind never slows a request:
what does not fit in the socket (net.unix.max_dgram_qlen datagrams) is not sent, and nginx
says so in its error log, a line each (``unsent``, counted from that log when ``status``
asks). This side counts what it drops itself (while the log writer is behind), what does
not parse, and datagrams from processes that are not the managed master's workers (the
socket is writable by all, for the workers' unprivileged user; the kernel's
SCM_CREDENTIALS say who sent each datagram).
"""

import asyncio
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import anyio
import anyio.abc

from dokuen.events import get_logger
from dokuen.proxy.router import ERROR_LOG, SOURCE, parse_datagram
from dokuen.supervise.logmux import LogMux

log = get_logger()

DATAGRAM = 8192  # nginx's syslog messages are at most about 4 KiB
RECEIVE_BUFFER = 4 << 20
BATCH = 256  # datagrams read before other tasks get a turn
# Lines wait this long (seconds) in the listener and go to the log writer together: one
# write, and one wakeup of the writer's thread, for every request of that time rather
# than for each (measured in bench/proxy.py: the writer's wakeups were most of dokuend's
# CPU per request). The socket itself holds only net.unix.max_dgram_qlen datagrams (10
# by default; nginx drops what does not fit).
FLUSH_EVERY = 0.01
# Where the socket holds this many datagrams or more (systemd sets 512 on every host it
# boots), it is read in turns: what is queued is drained, then the socket stays off the
# loop for PAUSE seconds, so a burst is read in one wakeup instead of one each. With the
# kernel's default (10) it is read at every wakeup: a pause would let nginx drop lines.
LONG_QUEUE = 128
PAUSE = 0.01  # of 2, 5 and 10 ms the fewest wakeups, least CPU (docs/benchmarks.md)
QUEUE_LENGTH = Path("/proc/sys/net/unix/max_dgram_qlen")  # taken when a socket is made
UNSENT = b"send() to syslog failed"  # what nginx logs (warn) for a datagram not sent
SENDERS_TTL = 2.0  # seconds a sender's pid stays trusted (pids are reused)
_UCRED = struct.Struct("3i")  # pid, uid, gid
_ANCILLARY = socket.CMSG_SPACE(_UCRED.size)


class RouterListener:
    """Reads the router socket; ``dynos`` maps web ports to (app, process name)."""

    def __init__(
        self,
        path: Path,
        mux: LogMux,
        master: Callable[[], int | None],
        clock: Callable[[], float] = time.monotonic,
        long_queue: int = LONG_QUEUE,
        pause: float | None = None,
    ) -> None:
        """``master`` is the managed nginx master's pid (None while it is down): only its
        children's datagrams are taken. A socket made to hold ``long_queue`` datagrams or
        more is read in turns, ``pause`` seconds apart (PAUSE when None)."""
        self.path = path
        self._mux = mux
        self._master = master
        self._clock = clock
        self._dynos: dict[int, tuple[str, str]] = {}
        self._previous: dict[int, tuple[str, str]] = {}
        self._senders: dict[int, bool] = {}
        self._senders_since = 0.0
        self.counts = {"lines": 0, "dropped": 0, "malformed": 0, "refused": 0, "unsent": 0}
        # nginx's error log (beside the socket, in nginx's prefix): what it could not send
        self.errors = path.parent / ERROR_LOG
        self._errors_read = _size(self.errors)  # what came before this dokuend is not counted
        self._lines: list[tuple[str, bytes]] = []  # read, not yet handed to the log
        self._size = 0  # their bytes
        self._timer: asyncio.TimerHandle | None = None
        self._long_queue = long_queue
        self._pause = PAUSE if pause is None else pause
        self.queue = 0  # datagrams the socket holds (net.unix.max_dgram_qlen), once bound
        self.turns = 0  # wakeups that read something
        self._resume: asyncio.TimerHandle | None = None  # while the socket is off the loop
        self.problem: str | None = None

    def update(self, webs: Iterable[tuple[str, str, int]]) -> None:
        """The running web processes, as (app, name, port), after every nginx change. The
        ports of the change before stay known a while: their last requests still arrive."""
        dynos = {port: (app, name) for app, name, port in webs}
        if dynos != self._dynos:
            self._previous, self._dynos = self._dynos, dynos

    def status(self) -> dict[str, int | str | None]:
        """What ``dokuenctl status`` shows: the counts, and why there are no lines if so;
        also the socket's queue length and the wakeups that read it (``--json``)."""
        self._count_unsent()
        return {**self.counts, "problem": self.problem, "queue": self.queue, "turns": self.turns}

    def _count_unsent(self) -> None:
        """Count nginx's ``send() to syslog failed`` lines written since the last look."""
        size = _size(self.errors)
        if size == self._errors_read:
            return
        start = self._errors_read if size > self._errors_read else 0  # rotated: all of it
        try:
            with self.errors.open("rb") as log_file:
                log_file.seek(start)
                text = log_file.read(size - start)
        except OSError:
            return
        self._errors_read = size
        self.counts["unsent"] += text.count(UNSENT)

    @property
    def dynos(self) -> Mapping[int, tuple[str, str]]:
        return {**self._previous, **self._dynos}

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind the socket, then read it until cancelled."""
        self.path.unlink(missing_ok=True)
        self.queue = _queue_length()  # before the socket: it keeps the value of its birth
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.setblocking(False)
            try:
                _bind(sock, self.path)
            except OSError as exc:  # the apps are served all the same, without router lines
                self.problem = f"no router lines: cannot bind {self.path}: {exc.strerror}"
                log.error("router.unavailable", problem=self.problem)
                task_status.started()
                return
            # nginx's workers run as an unprivileged user; who sent what is checked per datagram.
            self.path.chmod(0o666)
            task_status.started()
            # A reader callback for as long as the socket lives, rather than a wait per
            # wakeup (each one an epoll registration and a task switch): _drain runs in
            # the loop as soon as a datagram is in.
            loop = asyncio.get_running_loop()
            loop.add_reader(sock.fileno(), self._drain, sock, loop)
            log.info("router.listening", queue=self.queue, turns=self.queue >= self._long_queue)
            try:
                await anyio.sleep_forever()
            finally:
                if self._resume is not None:
                    self._resume.cancel()
                    self._resume = None
                loop.remove_reader(sock.fileno())
                self._drain(sock, None)  # what is in the socket still
                self._flush()
        finally:
            sock.close()
            self.path.unlink(missing_ok=True)
            log.info("router.closed", **self.counts)

    def _drain(self, sock: socket.socket, loop: asyncio.AbstractEventLoop | None) -> None:
        """Read what the socket holds (up to BATCH datagrams, or all of a long queue) and
        keep their lines for the next flush, which ``loop`` runs FLUSH_EVERY seconds after
        the first of them. A long queue is then left off ``loop`` for a pause."""
        dynos = self.dynos
        turns = self.queue >= self._long_queue
        read = 0
        while read < (max(BATCH, self.queue) if turns else BATCH):
            try:
                data, ancillary, flags, _address = sock.recvmsg(DATAGRAM, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # not expected of a bound datagram socket; never fatal
                log.warning("router.read_failed", error=str(exc))
                break
            read += 1
            if not self._from_nginx(ancillary):
                self.counts["refused"] += 1
                continue
            if self._mux.behind or self._size > self._mux.high_water:
                self.counts["dropped"] += 1
                continue
            try:
                line = parse_datagram(data, dynos, cut=bool(flags & socket.MSG_TRUNC))
            except ValueError as exc:
                self.counts["malformed"] += 1
                log.warning("router.malformed", error=str(exc), size=len(data))
                continue
            text = line.line.encode()
            self._lines.append((line.app, text))
            self._size += len(text)
        if read:
            self.turns += 1
        if loop is None:
            return
        if self._lines and self._timer is None:
            self._timer = loop.call_later(FLUSH_EVERY, self._flush)
        if turns and read:  # the next datagrams gather in the socket meanwhile
            loop.remove_reader(sock.fileno())
            self._resume = loop.call_later(self._pause, self._read_again, sock, loop)

    def _read_again(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        """After a pause: back on the loop, which calls ``_drain`` at once if anything came."""
        self._resume = None
        loop.add_reader(sock.fileno(), self._drain, sock, loop)

    def _flush(self) -> None:
        """Hand the lines kept so far to the log, stamped alike, one write for each run of
        lines of the same app, in the order they came."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines, self._size = self._lines, [], 0
        start = 0
        for end in range(1, len(lines) + 1):
            if end == len(lines) or lines[end][0] != lines[start][0]:
                self._mux.write(lines[start][0], SOURCE, [text for _, text in lines[start:end]])
                start = end
        self.counts["lines"] += len(lines)

    def _from_nginx(self, ancillary: list[tuple[int, int, bytes]]) -> bool:
        """Whether the sender (from SCM_CREDENTIALS) is a child of the nginx master."""
        master = self._master()
        if master is None:
            return False
        pid = next(
            (
                _UCRED.unpack(data[: _UCRED.size])[0]
                for level, kind, data in ancillary
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
            ),
            None,
        )
        if pid is None:
            return False
        now = self._clock()
        if now - self._senders_since > SENDERS_TTL:
            self._senders, self._senders_since = {}, now
        trusted = self._senders.get(pid)
        if trusted is None:
            # /proc is in memory and this runs once per worker every few seconds.
            trusted = self._senders[pid] = _parent(pid) == master
        return trusted


def _bind(sock: socket.socket, path: Path) -> None:
    """Bind to ``path``, even one longer than a socket address holds (108 bytes): through the
    directory's descriptor under /proc/self/fd, which is short."""
    if len(bytes(path)) < 100:
        sock.bind(str(path))
        return
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock.bind(f"/proc/self/fd/{directory}/{path.name}")
    finally:
        os.close(directory)


def _queue_length() -> int:
    """net.unix.max_dgram_qlen: the datagrams a Unix socket made now will hold."""
    try:
        return int(QUEUE_LENGTH.read_text())
    except (OSError, ValueError):
        return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return int(fields[1])  # after the command: state, then the parent's pid
