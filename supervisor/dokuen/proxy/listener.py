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
from dokuen.proxy.router import ERROR_LOG, dyno_table, render_batch, render_datagram
from dokuen.supervise.logmux import LogMux, timestamp

log = get_logger()

DATAGRAM = 8192  # nginx's syslog messages are at most about 4 KiB
# The batch: datagrams read since the last flush, each followed by a newline. Flushed early
# when the next datagram might not fit (about 250 requests' lines; at 10 ms a flush, 25,000
# requests a second before that happens).
BUFFER = 64 << 10
RECEIVE_BUFFER = 4 << 20
BATCH = 256  # datagrams read before other tasks get a turn
# With a short queue, lines wait this long (seconds) in the listener and go to the log
# writer together: one write, and one wakeup of the writer's thread, for every request of
# that time rather than for each. The socket itself holds only net.unix.max_dgram_qlen
# datagrams (10 by default; nginx drops what does not fit).
FLUSH_EVERY = 0.01
# Where the socket holds this many datagrams or more (systemd sets 512 on every host it
# boots), it is read in turns: what is queued is drained and handed to the log at once,
# then the socket stays off the loop for a pause, so a burst is read in one wakeup instead
# of one each. With the kernel's default (10) it is read at every wakeup: a pause would
# let nginx drop lines.
LONG_QUEUE = 128
# The pause: PAUSE, or less where requests come so fast that the socket would be more than
# half full by the next turn (at the rate of the last turns), never under MIN_PAUSE. Each
# wakeup costs dokuend 0.1-0.5 ms of CPU (the loop's, and the log writer's thread): at
# 10,000 requests a second, 20 ms is 200 lines a wakeup. A line waits at most PAUSE.
PAUSE = 0.02
MIN_PAUSE = 0.002
QUEUE_LENGTH = Path("/proc/sys/net/unix/max_dgram_qlen")  # taken when a socket is made
# Each nginx worker's socket holds at most net.core.wmem_default bytes of datagrams not yet
# read (208 KiB: 167 router datagrams of up to about 700 bytes, each taking a 1 KiB buffer
# and the kernel's 256 bytes about it): with few workers, a shorter limit than the queue.
SEND_BUFFER = Path("/proc/sys/net/core/wmem_default")
IN_FLIGHT = 1280  # the bytes a datagram of up to 700 takes in its sender's buffer
UNSENT = b"send() to syslog failed"  # what nginx logs (warn) for a datagram not sent
SENDERS_TTL = 2.0  # seconds a sender's pid stays trusted (pids are reused)
_UCRED = struct.Struct("3i")  # pid, uid, gid
# Room for the credentials alone: descriptors a sender attaches (SCM_RIGHTS) do not fit,
# so the kernel installs none of them in dokuend (a larger buffer would leak them).
_ANC = socket.CMSG_SPACE(_UCRED.size)
_TRUNC = int(socket.MSG_TRUNC)  # an IntFlag's & costs more than the rest of a datagram's turn
_LT, _NEWLINE = ord("<"), ord("\n")


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
        self._current: dict[int, tuple[str, str]] = {}
        self._previous: dict[int, tuple[str, str]] = {}
        self._dynos: dict[int, tuple[str, str]] = {}  # both, the current ones first
        self._table = dyno_table(self._dynos)
        # The SCM_CREDENTIALS of senders found to be the master's children, and of others.
        self._trusted: set[tuple[int, int, bytes]] = set()
        self._refused: set[tuple[int, int, bytes]] = set()
        self._senders_master: int | None = None
        self._senders_since = 0.0
        self.counts = {"lines": 0, "dropped": 0, "malformed": 0, "refused": 0, "unsent": 0}
        # nginx's error log (beside the socket, in nginx's prefix): what it could not send
        self.errors = path.parent / ERROR_LOG
        self._errors_read = _size(self.errors)  # what came before this dokuend is not counted
        self._buffer = bytearray()  # the batch (BUFFER bytes once the socket is bound)
        self._view = memoryview(self._buffer)
        self._end = 0  # the batch's bytes
        self._count = 0  # and its datagrams
        self._odd: list[tuple[bytes, bool]] = []  # in the batch as b"\0": (datagram, cut)
        self._timer: asyncio.TimerHandle | None = None
        self._long_queue = long_queue
        self._pause = PAUSE if pause is None else pause
        self.queue = 0  # datagrams the socket holds (net.unix.max_dgram_qlen), once bound
        self.send_buffer = 0  # bytes a sender may have in flight (net.core.wmem_default)
        self.turns = 0  # wakeups that read something
        self._resume: asyncio.TimerHandle | None = None  # while the socket is off the loop
        self._last_turn = float("-inf")  # loop time of the last turn that read something
        self.problem: str | None = None

    def update(self, webs: Iterable[tuple[str, str, int]]) -> None:
        """The running web processes, as (app, name, port), after every nginx change. The
        ports of the change before stay known a while: their last requests still arrive."""
        dynos = {port: (app, name) for app, name, port in webs}
        if dynos != self._current:
            self._previous, self._current = self._current, dynos
            self._dynos = {**self._previous, **self._current}
            self._table = dyno_table(self._dynos)

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
        return self._dynos

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind the socket, then read it until cancelled."""
        self.path.unlink(missing_ok=True)
        self._view.release()
        self._buffer = bytearray(BUFFER)
        self._view = memoryview(self._buffer)
        self.send_buffer = _queue_length(SEND_BUFFER)
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
        """Read what the socket holds (up to BATCH datagrams, or all of a long queue) into
        the batch, which ``loop`` hands to the log FLUSH_EVERY seconds after its first
        datagram. A long queue is then left off ``loop`` for a pause.

        Per datagram, only what must be: one ``recvmsg_into`` straight into the batch, the
        sender's credentials looked up in a set, a newline after it. Parsing and rendering
        wait for the flush, where they are done for the whole batch at once (router.py)."""
        turns = self.queue >= self._long_queue
        limit = max(BATCH, self.queue) if turns else BATCH
        self._check_senders()
        buffer, view, trusted, mux = self._buffer, self._view, self._trusted, self._mux
        receive, room, behind = sock.recvmsg_into, len(buffer) - DATAGRAM - 1, mux.behind
        end, count, read, received = self._end, self._count, 0, 0
        senders: dict[tuple[int, int, bytes], int] = {}  # datagrams of each, this turn
        while read < limit:
            if end > room:  # full: to the log now
                self._end, self._count = end, count
                self._flush()
                end = count = 0
                behind = mux.behind
            try:
                size, ancillary, flags, _ = receive([view[end : end + DATAGRAM]], _ANC)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # not expected of a bound datagram socket; never fatal
                log.warning("router.read_failed", error=str(exc))
                break
            read += 1
            received += size
            if not ancillary or (ancillary[0] not in trusted and not self._trusts(ancillary)):
                self.counts["refused"] += 1
                continue
            senders[ancillary[0]] = senders.get(ancillary[0], 0) + 1
            if behind or end > mux.high_water:  # only this turn's flushes move the writer
                self.counts["dropped"] += 1
                continue
            if (
                flags & _TRUNC
                or not size
                or buffer[end] != _LT
                or buffer.find(b"\n", end, end + size) >= 0
            ):  # not nginx's usual: kept aside, its place marked by a line of one NUL byte
                self._odd.append((bytes(view[end : end + size]), bool(flags & _TRUNC)))
                buffer[end] = 0
                size = 1
            buffer[end + size] = _NEWLINE
            end += size + 1
            count += 1
        self._end, self._count = end, count
        if read:
            self.turns += 1
        if loop is None:
            return
        if turns and self._count:  # a turn's lines waited in the socket: to the log now
            self._flush()
        elif self._count and self._timer is None:
            self._timer = loop.call_later(FLUSH_EVERY, self._flush)
        if turns and read:  # the next datagrams gather in the socket meanwhile
            loop.remove_reader(sock.fileno())
            self._resume = loop.call_later(
                self._next_pause(read, max(senders.values(), default=0), received, loop.time()),
                self._read_again,
                sock,
                loop,
            )

    def _next_pause(self, read: int, busiest: int, received: int, now: float) -> float:
        """The pause after a turn that read ``read`` datagrams (``busiest`` of them from
        one sender; ``received`` bytes): short enough that at the rate since the turn
        before, neither the socket's queue nor the busiest sender's buffer is more than
        half full by the next turn."""
        elapsed, self._last_turn = now - self._last_turn, now
        each = IN_FLIGHT + max(0, received // max(read, 1) - 700)
        room = min(self.queue, self.send_buffer // each) if self.send_buffer else self.queue
        filled = max(read / max(self.queue, 1), busiest / max(room, 1))  # in ``elapsed``
        if filled * 2 * self._pause <= elapsed:  # the usual case, at once
            return self._pause
        return max(MIN_PAUSE, min(self._pause, elapsed / (2 * filled)))

    def _read_again(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        """After a pause: back on the loop, which calls ``_drain`` at once if anything came."""
        self._resume = None
        loop.add_reader(sock.fileno(), self._drain, sock, loop)

    def _flush(self) -> None:
        """Hand the batch to the log: every line stamped alike, in the order it came, one
        write. Usually one pattern and one format over the whole batch; when a datagram in
        it is not the usual request's, each is rendered on its own."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._count:
            return
        batch, count, odd = self._view[: self._end], self._count, iter(self._odd)
        self._end = self._count = 0
        self._odd = []
        stamp = timestamp(self._mux.clock())
        rendered = render_batch(batch, count, stamp, self._table)
        if rendered is None:
            parts = []
            for each in bytes(batch).split(b"\n")[:-1]:
                data, cut = next(odd) if each == b"\0" else (each, False)
                try:
                    parts.append(render_datagram(data, stamp, self._table, self._dynos, cut))
                except ValueError as exc:
                    self.counts["malformed"] += 1
                    log.warning("router.malformed", error=str(exc), size=len(data))
            rendered = b"".join(parts)
        batch.release()
        self.counts["lines"] += rendered.count(b"\n")
        self._mux.write_rendered(rendered)

    def _check_senders(self) -> None:
        """Forget the senders known when the master changed or SENDERS_TTL passed (once a
        turn: the master cannot change while a turn runs)."""
        master, now = self._master(), self._clock()
        if master != self._senders_master or now - self._senders_since > SENDERS_TTL:
            self._trusted.clear()
            self._refused.clear()
            self._senders_master, self._senders_since = master, now

    def _trusts(self, ancillary: list[tuple[int, int, bytes]]) -> bool:
        """Whether the sender (from SCM_CREDENTIALS) is a child of the nginx master; the
        answer is kept for its credentials (pid, uid, gid) until ``_check_senders`` forgets
        it, so /proc is read once per worker every few seconds."""
        master = self._senders_master
        for cmsg in ancillary:
            level, kind, data = cmsg
            if level != socket.SOL_SOCKET or kind != socket.SCM_CREDENTIALS:
                continue
            if master is None or cmsg in self._refused or len(data) < _UCRED.size:
                return False
            if _parent(*_UCRED.unpack_from(data)) != master:
                self._refused.add(cmsg)
                return False
            self._trusted.add(cmsg)
            return True
        return False


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


def _queue_length(path: Path = QUEUE_LENGTH) -> int:
    """net.unix.max_dgram_qlen: the datagrams a Unix socket made now will hold (or, given
    SEND_BUFFER, the bytes a sender's socket may have in flight)."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _parent(pid: int, uid: int, gid: int) -> int | None:
    """The parent of ``pid``, if ``pid`` now has the sender's real uid and gid: else a
    sender that exited and whose pid went to a new nginx worker before its datagram was
    read would be taken for that worker (None)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            fields = dict(line.split(b":", 1) for line in status.read().splitlines())
        ids = (int(fields[b"PPid"]), int(fields[b"Uid"].split()[0]), int(fields[b"Gid"].split()[0]))
    except (OSError, KeyError, ValueError, IndexError):
        return None
    return ids[0] if ids[1:] == (uid, gid) else None
