"""The intake: every process's output, read off its pipe by one reader for the whole daemon,
framed into whole lines and handed to the unified log.

A quiet pipe stays registered with the event loop for its whole life: a line that comes is
read at once, in a callback; no task wakes and nothing is registered again for the next
read. A read of a burst (``BURST`` bytes or more) takes the pipe off the loop: one timer for
every such pipe reads them all again ``BURST_PAUSE`` later, one after another, stamped alike,
as supervisord's poll loop does, so a fast writer's lines come in few, big reads and cost no
system call but the read itself. A pipe whose read comes back small goes back on the loop.

A process slot owns its pipe with no task for it (an idle child costs the daemon a
registered reader, not a task): it registers it (``watch``) when the child starts, waits
for the child's exit and then for the end of file, and takes it off the loop (``close``)
before the child's pipe is closed. A failure in a callback ends the pipe and tells the slot
(``Pipe.failed``), which stops the process and raises it. Children that have no file
descriptor to watch (the loop's own subprocesses, fakes in tests) are read the older way,
by a task (``pump``), one ``read`` at a time.
"""

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anyio

from dokuen.events import get_logger
from dokuen.supervise.latch import Latch
from dokuen.supervise.lines import LineFramer, timestamp

__all__ = [
    "BURST",
    "BURST_PAUSE",
    "PARTIAL_LINE_DELAY",
    "READS_PER_TURN",
    "READ_SIZE",
    "Deliver",
    "Intake",
    "Outlet",
    "Pipe",
    "Readable",
    "Sink",
    "Tail",
]

log = get_logger()

# A pipe's size. CPython allocates a read's whole size first: past glibc's mmap threshold
# (128 KiB) that is an mmap and a munmap per read, 45 us each.
READ_SIZE = 1 << 16
# A pipe that fills a whole read is read again, up to this many times a turn (1 MiB: a
# FIFO's size), so one very fast writer is not held to 64 KiB per pause.
READS_PER_TURN = 16
# A read of a burst (BURST bytes or more) is followed by a pause: a fast writer's lines come
# in fewer, bigger reads, a quiet one's at once. A writer that fills its pipe meanwhile
# waits in its write, losing nothing.
BURST, BURST_PAUSE = 4096, 0.005
PARTIAL_LINE_DELAY = 0.2  # seconds without a read before a line without its newline is written

Deliver = Callable[[bytes, str | None], None]  # (lines, each ending in a newline; stamp)


class Tail(Protocol):
    """What holds a line back at the pipe (keeper.py's FIFO, for a re-exec to carry)."""

    @property
    def held(self) -> bool:
        """True while a line without its newline is held back."""

    def take(self, data: bytes, max_bytes: int) -> bytes:
        """The whole lines of what was read (the held line before them); the rest is held."""

    def release(self) -> bytes:
        """The held line, handed out as it is."""


def _never() -> bool:
    return False


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Outlet:
    """What a child gives the intake to read: its output's non-blocking descriptor (which
    the child closes, after the pump has ended), what holds lines back there, and when not
    to read at all (``frozen``: a re-exec is under way)."""

    fd: int
    tail: Tail | None = None
    frozen: Callable[[], bool] = _never


class Readable(Protocol):
    """A child as the intake sees it."""

    def outlet(self) -> Outlet | None:
        """Its output's descriptor to watch; None when it can only be read with ``read``."""

    async def read(self, max_bytes: int) -> bytes:
        """Output bytes; b"" at end of file."""


class Sink(Protocol):
    """Where the lines go (the LogMux): its clock, and whether it is too far behind."""

    clock: Callable[[], float]

    @property
    def behind(self) -> bool: ...

    async def backpressure(self) -> None: ...


class Pipe:
    """One child's output as the intake reads it: framed into lines, a partial line written
    after ``PARTIAL_LINE_DELAY`` without a read, everything left written at the end."""

    __slots__ = (
        "_deliver",
        "_framer",
        "_loop",
        "_partial_due",
        "_tail",
        "done",
        "ended",
        "error",
        "failed",
        "fd",
        "frozen",
        "last",
        "timer",
        "watched",
    )

    def __init__(
        self,
        outlet: Outlet,
        deliver: Deliver,
        loop: asyncio.AbstractEventLoop,
        partial_due: Callable[["Pipe"], None],
    ) -> None:
        self.fd = outlet.fd
        self.frozen = outlet.frozen
        self.ended = Latch()
        self.error: Exception | None = None  # a failure in a callback, for the owner to raise
        self.failed: Callable[[], None] = _nothing  # told of that failure (a slot ends)
        self.watched = False  # registered with the loop (else paused, or done)
        self.done = False
        self.last = 0.0  # the loop's time of the last read that left a partial line
        self.timer: asyncio.TimerHandle | None = None  # for that partial line
        self._tail = outlet.tail
        self._deliver = deliver
        self._loop = loop
        self._partial_due = partial_due
        self._framer = LineFramer()

    def read(self, stamp: str, reads: int = 1) -> int:
        """Read what is there, up to ``reads`` full reads; how many bytes (-1: the end)."""
        total = 0
        for _ in range(reads):
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                return total
            except OSError as exc:  # not seen on a pipe; the end, and said why
                log.warning("pipe.read_failed", fd=self.fd, error=str(exc))
                data = b""
            if not data:
                self.end(stamp)
                return -1
            self._take(data, stamp)
            total += len(data)
            if len(data) < READ_SIZE:
                break
        return total

    def _take(self, data: bytes, stamp: str) -> None:
        if self._tail is not None:
            data = self._tail.take(data, READ_SIZE)
        if data:
            block = self._framer.feed_block(data)
            if block:
                self._deliver(block, stamp)
        if self._framer.pending or (self._tail is not None and self._tail.held):
            self.last = self._loop.time()
            if self.timer is None:
                self.arm(PARTIAL_LINE_DELAY)

    def arm(self, delay: float) -> None:
        """Look at the partial line again in ``delay`` seconds."""
        self.timer = self._loop.call_later(delay, self._partial_due, self)

    def flush(self, stamp: str | None) -> None:
        """Write the line held back and the framer's partial line, each as a line."""
        rest = self._tail.release() if self._tail is not None else b""
        block = self._framer.feed_block(rest) if rest else b""
        block += self._framer.flush_block()
        if block:
            self._deliver(block, stamp)

    def end(self, stamp: str | None) -> None:
        """The end of file (or of the pump): the last bytes, then no more reads."""
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            if self.error is None:
                self.flush(stamp)
        finally:
            self.ended.set()

    def fail(self, error: Exception) -> None:
        self.error = error
        self.end(None)
        self.failed()


class Intake:
    """Reads every registered pipe (see the module's docstring). One per LogMux."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._paused: list[Pipe] = []  # off the loop: read again on the next turn
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def paused(self) -> int:
        """How many pipes wait for the next turn."""
        return len(self._paused)

    def watch(self, child: Readable, deliver: Deliver) -> Pipe | None:
        """Register the child's pipe: from now on the loop's callbacks read it, handing each
        batch of whole lines to ``deliver``, until its end of file (``Pipe.ended``). None
        when the child has no descriptor to watch (``pump`` reads those). End it with
        :meth:`close`, before the child's pipe is closed."""
        outlet = child.outlet()
        if outlet is None:
            return None
        # anyio has no reader that stays registered: the loop's own add_reader is used.
        loop = self._loop = asyncio.get_running_loop()
        pipe = Pipe(outlet, deliver, loop, self._partial_due)
        if outlet.tail is not None and outlet.tail.held:  # a line an earlier image carried
            pipe.last = loop.time()
            pipe.arm(PARTIAL_LINE_DELAY)
        self._watch(pipe)
        return pipe

    def close(self, pipe: Pipe) -> None:
        """Take the pipe off the loop and end it: when it was cut short (a slot's drain timed
        out while the log was behind), what is in the pipe now is still written, up to a
        turn's reads. A failure is kept in ``pipe.error``, for the owner to raise."""
        self._unwatch(pipe)
        if not (pipe.done or pipe.frozen()):
            try:
                pipe.read(timestamp(self._sink.clock()), READS_PER_TURN)
            except Exception as exc:
                pipe.error = exc
        pipe.end(None)

    async def pump(self, child: Readable, deliver: Deliver) -> None:
        """Read the child's output to its end (or until cancelled), handing each batch of
        whole lines to ``deliver``; the last partial line too, before this returns."""
        pipe = self.watch(child, deliver)
        if pipe is None:
            await self._pump_reads(child, deliver)
            return
        try:
            await pipe.ended.wait()
        finally:
            self.close(pipe)
        if pipe.error is not None:
            raise pipe.error

    def _watch(self, pipe: Pipe) -> None:
        assert self._loop is not None
        self._loop.add_reader(pipe.fd, self._readable, pipe)
        pipe.watched = True

    def _unwatch(self, pipe: Pipe) -> None:
        if pipe.watched:
            assert self._loop is not None
            self._loop.remove_reader(pipe.fd)
            pipe.watched = False

    def _readable(self, pipe: Pipe) -> None:
        try:
            if pipe.frozen() or self._sink.behind:
                self._pause(pipe)
                return
            size = pipe.read(timestamp(self._sink.clock()))
            if size < 0:
                self._unwatch(pipe)
            elif size >= BURST:
                self._pause(pipe)
        except Exception as exc:  # raised again by the pump, in its task
            self._unwatch(pipe)
            pipe.fail(exc)

    def _pause(self, pipe: Pipe) -> None:
        self._unwatch(pipe)
        self._paused.append(pipe)
        if self._timer is None:
            assert self._loop is not None
            self._timer = self._loop.call_later(BURST_PAUSE, self._turn)

    def _partial_due(self, pipe: Pipe) -> None:
        """A partial line waited: written as a line when no byte came for
        ``PARTIAL_LINE_DELAY`` and none waits in the pipe. Not while frozen (it waits for
        the next image) nor while the log is behind (its rest may be in the pipe, unread)."""
        assert self._loop is not None
        pipe.timer = None
        if pipe.done:
            return
        try:
            wait = pipe.last + PARTIAL_LINE_DELAY - self._loop.time()
            if wait > 0:
                pipe.arm(max(wait, BURST_PAUSE))
                return
            if pipe.frozen() or self._sink.behind:  # not sooner: a timer per held line
                pipe.arm(PARTIAL_LINE_DELAY)  # 200 times a second would feed the backlog
                return
            size = pipe.read(timestamp(self._sink.clock()))  # what came meanwhile
            if size < 0:
                self._unwatch(pipe)
            elif size == 0:
                pipe.flush(None)
            elif size >= BURST and pipe.watched:
                self._pause(pipe)
        except Exception as exc:  # raised again by the pump, in its task
            self._unwatch(pipe)
            pipe.fail(exc)

    def _turn(self) -> None:
        """Read every paused pipe once (with one timestamp), in the order they paused."""
        self._timer = None
        pipes, self._paused = self._paused, []
        stamp = timestamp(self._sink.clock())
        for pipe in pipes:
            if pipe.done:
                continue
            try:
                if pipe.frozen() or self._sink.behind:
                    self._pause(pipe)
                    continue
                size = pipe.read(stamp, READS_PER_TURN)
                if size >= BURST:
                    self._pause(pipe)
                elif size >= 0:
                    self._watch(pipe)
            except Exception as exc:  # raised again by the pump, in its task
                pipe.fail(exc)

    async def _pump_reads(self, child: Readable, deliver: Deliver) -> None:
        framer = LineFramer()
        try:
            while chunk := await self._read(child, framer, deliver):
                block = framer.feed_block(chunk)
                if block:
                    deliver(block, None)
                await self._sink.backpressure()
                if len(chunk) >= BURST:  # a fast writer: let its next lines gather
                    await anyio.sleep(BURST_PAUSE)
        finally:
            if tail := framer.flush_block():
                deliver(tail, None)

    async def _read(self, child: Readable, framer: LineFramer, deliver: Deliver) -> bytes:
        """The next chunk; a partial line that waits too long for its newline is written."""
        while framer.pending:
            with anyio.move_on_after(PARTIAL_LINE_DELAY):
                return await child.read(READ_SIZE)
            deliver(framer.flush_block(), None)
        return await child.read(READ_SIZE)
