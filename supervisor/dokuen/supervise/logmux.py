"""The unified log: lines in from every process, one Heroku-format stream out.

The pure half (lines.py, whose names are here too) frames bytes into lines (``LineFramer``)
and renders them (``render``); the I/O half (``LogMux``) appends batches to ``dokuen.log``,
rotates it by size, and fans the same batches out to ``logs -f`` followers without ever
waiting on them.
"""

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

from dokuen.events import get_logger
from dokuen.supervise.intake import Intake
from dokuen.supervise.lines import (
    CONTINUED,
    CONTINUES,
    MAX_LINE,
    LineFramer,
    render,
    render_block,
    render_parts,
    timestamp,
)
from dokuen.supervise.logfile import (
    Gap,
    Part,
    cut_batch,
    has_room,
    open_log,
    rotate,
    write_all,
)

# The pure half lives in lines.py; its names stay importable from here.
__all__ = [
    "CONTINUED",
    "CONTINUES",
    "DAEMON_SOURCE",
    "MAX_LINE",
    "ROUTER_SOURCE",
    "SOURCES",
    "Follower",
    "LineFramer",
    "LogFilter",
    "LogMux",
    "render",
    "render_block",
    "source_of",
    "tail",
    "timestamp",
]

log = get_logger()

DAEMON_SOURCE = "dokuen"


SOURCES = ("app", "dokuen", "router")
ROUTER_SOURCE = "router"


def source_of(bracket: str) -> str:
    """Which of SOURCES a line's ``APP[...]`` part belongs to."""
    return bracket if bracket in (DAEMON_SOURCE, ROUTER_SOURCE) else "app"


@dataclass(frozen=True)
class LogFilter:
    """Which lines a reader wants: one app, one process type or process, one source
    (``app``: the processes' own lines, ``dokuen``: the platform's events, ``router``: the
    HTTP requests), or everything."""

    app: str | None = None
    process_type: str | None = None
    index: int | None = None
    source: str | None = None

    @property
    def everything(self) -> bool:
        return self.app is None and self.process_type is None and self.source is None

    def matches(self, line: bytes) -> bool:
        space = line.find(b" ")
        bracket = line.find(b"[", space)
        close = line.find(b"]:", bracket)
        if space < 0 or bracket < 0 or close < 0:
            return False
        if self.app is not None and line[space + 1 : bracket] != self.app.encode():
            return False
        source = line[bracket + 1 : close].decode(errors="replace")
        if self.source is not None and source_of(source) != self.source:
            return False
        if self.process_type is None:
            return True
        if self.index is not None:
            return source == f"{self.process_type}.{self.index}"
        return source.split(".")[0] == self.process_type

    def select(self, batch: bytes) -> bytes:
        """The lines of a rendered batch that match, still newline-terminated."""
        if self.everything:
            return batch
        kept = [line for line in batch.split(b"\n")[:-1] if self.matches(line)]
        return b"".join(line + b"\n" for line in kept)


def tail(fd: int, end: int, count: int, wanted: LogFilter, block: int = 1 << 16) -> bytes:
    """The last ``count`` matching lines of the file before offset ``end`` (blocking I/O)."""
    found: list[bytes] = []
    position, carry = end, b""
    while position > 0 and len(found) < count:
        start = max(0, position - block)
        data = os.pread(fd, position - start, start) + carry
        lines = data.split(b"\n")
        carry = lines.pop(0) if start > 0 else b""
        found[:0] = [line for line in lines if line and wanted.matches(line)]
        position = start
    return b"".join(line + b"\n" for line in found[-count:]) if count else b""


class Follower:
    """One reader of the live stream. Never blocks the writer: when more than ``limit`` bytes
    wait for it, it is dropped, and ``dropped`` says so once it has read what was queued."""

    def __init__(self, wanted: LogFilter, backlog: bytes, start: int, limit: int) -> None:
        self.wanted = wanted
        self.backlog = backlog
        self.start = start  # position in the stream of the first byte it wants
        self.dropped = False
        self._limit = limit
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._closed = False
        self._ready = anyio.Event()

    def offer(self, batch: bytes, position: int) -> bool:
        """Queue the part of a batch (that starts at ``position`` in the stream) from the
        follower's start on; False (and the follower closed) when it has fallen behind."""
        if self._closed:
            return False
        if position < self.start:  # queued before it joined: that part is in its backlog
            batch = batch[self.start - position :]
            if not batch:
                return True
        if self._queued + len(batch) > self._limit:
            self.dropped = True
            self.close()
            return False
        self._queue.append(batch)
        self._queued += len(batch)
        self._ready.set()
        return True

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    def __aiter__(self) -> "Follower":
        return self

    async def __anext__(self) -> bytes:
        """The next batch with at least one wanted line; stops once closed and drained."""
        while True:
            while not self._queue:
                if self._closed:
                    raise StopAsyncIteration
                await self._ready.wait()
                self._ready = anyio.Event()
            batch = self._queue.popleft()
            self._queued -= len(batch)
            selected = self.wanted.select(batch)
            if selected:
                return selected


class LogMux:
    """Appends rendered lines to the unified log file and fans them out to followers.

    Producers call ``write``/``event`` synchronously (so lines land in the order they were
    stamped) and ``await backpressure()`` between reads; one writer task (``run``) writes
    everything pending in one batch per wake-up, off the event loop.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        keep: int,
        clock: Callable[[], float] = time.time,
        high_water: int = 8 << 20,
        follower_limit: int = 16 << 20,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.clock = clock
        self.high_water = high_water
        self.follower_limit = follower_limit
        # Rendered parts, in order: each whole lines, or a line's prefix (render_parts).
        self._pending: list[Part] = []
        self._pending_bytes = 0
        self._inflight: list[Part] = []  # taken off the queue, not yet in the file
        self._written = 0  # stream positions: bytes ever written, and ever queued
        self._queued = 0
        self._fd = -1
        self._size = 0
        self._wake = anyio.Event()
        self._drained = anyio.Event()
        self._followers: list[Follower] = []
        self.lost = 0  # bytes that could not be written to the file
        self._gap: Gap | None = None  # what it could not take since a write failed
        self._rotate_failed = False
        self.intake = Intake(self)  # reads every process's output into write_block

    def write(self, app: str, source: str, lines: list[bytes]) -> None:
        """Stamp and queue lines that one source wrote."""
        if lines:
            self._queue(render(timestamp(self.clock()), app, source, lines))

    def write_rendered(self, lines: bytes) -> None:
        """Queue lines rendered by the caller, each ending in a newline and stamped with
        ``timestamp(self.clock())`` just before (the router lines of many apps at once)."""
        if lines:
            self._queue(lines)

    def write_block(self, app: str, source: str, block: bytes, stamp: str | None = None) -> None:
        """Stamp and queue lines that one source wrote, as ``LineFramer.feed_block`` gives
        them; with ``stamp``, a timestamp taken for every pipe read at once (the intake)."""
        if block:
            if stamp is None:
                stamp = timestamp(self.clock())
            self._queue(*render_parts(stamp, app, source, block))

    def event(self, app: str, message: str) -> None:
        """Queue one of the daemon's own lifecycle lines, ``APP[dokuen]: message``."""
        self.write(app, DAEMON_SOURCE, [message.encode()])

    def _queue(self, *parts: Part) -> None:
        self._pending += parts
        size = sum(map(len, parts))
        self._pending_bytes += size
        self._queued += size
        self._wake.set()

    @property
    def written(self) -> int:
        """Stream position: the bytes ever handed to the file (or counted lost)."""
        return self._written

    @property
    def queued(self) -> int:
        """Stream position: the bytes ever queued (the lines up to it land at ``written``)."""
        return self._queued

    @property
    def behind(self) -> bool:
        """Whether the writer is more than ``high_water`` bytes behind (for producers that
        drop rather than wait, such as the router lines)."""
        return self._pending_bytes > self.high_water

    async def backpressure(self) -> None:
        """Wait while the writer is more than ``high_water`` bytes behind."""
        while self._pending_bytes > self.high_water:
            await self._drained.wait()

    async def drained(self) -> None:
        """Wait until every line queued so far is in the file (before a re-exec)."""
        while self._pending or self._inflight:
            await anyio.sleep(0.005)

    def follow(self, wanted: LogFilter, lines: int) -> tuple[Follower, int, int]:
        """Register a follower that gets every batch queued from now on.

        Returns the follower, a duplicate of the log's file descriptor (the caller closes
        it) and the offset up to which the file holds lines queued before now, so that the
        caller can read the last ``lines`` lines with ``tail`` with no gap and no overlap:
        lines queued but not yet in the file are in ``follower.backlog``.
        """
        backlog = wanted.select(b"".join(self._inflight + self._pending))
        follower = Follower(wanted, backlog, self._queued, self.follower_limit)
        self._followers.append(follower)
        return follower, os.dup(self._fd), self._size

    def unfollow(self, follower: Follower) -> None:
        if follower in self._followers:
            self._followers.remove(follower)
        follower.close()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The writer task. On cancellation it writes whatever is still pending, then closes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = open_log(self.path)
        self._size = os.fstat(self._fd).st_size
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                await self._flush()
        finally:
            with anyio.CancelScope(shield=True):
                await self._flush()
                os.close(self._fd)
                for follower in self._followers:
                    follower.close()

    async def _flush(self) -> None:
        while self._pending:
            self._wake = anyio.Event()
            self._inflight, self._pending = self._pending, []
            self._pending_bytes = 0
            self._drained.set()
            self._drained = anyio.Event()
            with anyio.CancelScope(shield=True):  # off the queue now: it must land
                await self._append(self._inflight)

    async def _append(self, batch: list[Part]) -> None:
        """Write a batch (rendered chunks, each ending in a newline) with as few ``writev``
        calls as it takes, rotating at the first line end past ``max_bytes``."""
        while batch:
            part, batch = cut_batch(batch, self.max_bytes - self._size)
            size = sum(map(len, part))
            try:
                wrote = await anyio.to_thread.run_sync(self._write, part)
            except OSError as exc:
                # A full disk must not take the apps down with the log: the lines are lost
                # (and counted), the stream goes on, followers still get them.
                await anyio.to_thread.run_sync(self._cut_back)
                self._missed(part, exc)
            else:
                if wrote:
                    self._size += size
                    if self._gap is not None:
                        self._resumed(self._gap)
                else:
                    self._missed(part, None)
            # Offset and unwritten bytes change together, on the loop, so follow() sees
            # every line exactly once: in the file before the offset, or in the backlog.
            self._inflight = batch
            position, self._written = self._written, self._written + size
            if self._followers:
                joined = b"".join(part)
                self._followers = [f for f in self._followers if f.offer(joined, position)]
            if self._size >= self.max_bytes:
                try:
                    fd = await anyio.to_thread.run_sync(rotate, self.path, self.keep)
                except OSError as exc:
                    if not self._rotate_failed:  # once, not at every batch after it
                        log.error("log.rotate_failed", error=str(exc))
                    self._rotate_failed = True
                    continue  # keep writing to the file we have
                os.close(self._fd)
                self._fd, self._size, self._rotate_failed = fd, 0, False

    def _write(self, part: list[Part]) -> bool:
        """Write ``part`` (blocking); False, without trying, while lines are dropped and
        the file system has not got room again."""
        if self._gap is not None and not has_room(self._fd):
            return False
        write_all(self._fd, part)
        return True

    def _cut_back(self) -> None:
        """After a failed write: what of it reached the file goes (a line is never left
        cut, for the next write to run into)."""
        with contextlib.suppress(OSError):  # not a file that can be cut (/dev/full)
            os.ftruncate(self._fd, self._size)

    def _missed(self, part: list[Part], exc: OSError | None) -> None:
        self.lost += sum(map(len, part))
        if self._gap is None:  # said once, not at every batch while the disk stays full
            assert exc is not None  # a gap starts with a write that failed
            self._gap = Gap(timestamp(self.clock()), exc.strerror or str(exc))
            log.error(
                "log.write_failed",
                path=str(self.path),
                error=str(exc),
                fix="free space on its file system; lines are counted until then",
            )
        self._gap.add(part)

    def _resumed(self, gap: Gap) -> None:
        self._gap = None
        log.warning("log.write_resumed", lines=gap.lines, lost_bytes=gap.size)
        self.event(DAEMON_SOURCE, gap.message(timestamp(self.clock())))
