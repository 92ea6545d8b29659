"""The intake as an attacker's app would try it: a process that writes at full speed for
ever does not hold back a quiet app's line, nor does an app whose delivery fails; a line
that never ends is written in pieces of at most MAX_LINE, never held whole in memory;
held partial lines do not spin while the log is behind."""

import os
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from dokuen.supervise.intake import BURST, BURST_PAUSE, PARTIAL_LINE_DELAY, Intake, Outlet, Pipe
from dokuen.supervise.keeper import Fifo, Keeper
from dokuen.supervise.lines import CONTINUED, CONTINUES, MAX_LINE
from dokuen.supervise.spawn import OsSpawner
from tests.test_intake import PipeChild, Received, Sink, nonblocking_pipe

pytestmark = pytest.mark.anyio


FLOOD_LINE = 99


class Counted:
    """A delivery that only counts what it was given (a flood's megabytes)."""

    def __init__(self) -> None:
        self.size = 0
        self.longest = 0
        self.odd = 0  # lines of another length than the flood's

    def __call__(self, block: bytes, stamp: str | None) -> None:
        self.size += len(block)
        lines = block[:-1].split(b"\n")  # every block ends in a newline
        self.longest = max(self.longest, *map(len, lines))
        self.odd += sum(len(line) != FLOOD_LINE for line in lines)

    async def until(self, predicate: Callable[[], bool]) -> None:
        with anyio.fail_after(20):
            while not predicate():
                await anyio.sleep(0.005)


async def test_a_flood_and_a_broken_pipe_do_not_hold_back_a_quiet_line(tmp_path: Path) -> None:
    intake = Intake(Sink())
    spawner = OsSpawner()
    flood = await spawner("exec yes " + "f" * FLOOD_LINE, {"PATH": os.defpath}, tmp_path)
    assert flood.outlet() is not None
    flooded = Counted()
    quiet_read, quiet_write = nonblocking_pipe()
    quiet = Received()
    broken_read, broken_write = nonblocking_pipe()

    def broken(block: bytes, stamp: str | None) -> None:
        raise RuntimeError("this app's log broke")

    failures: list[Exception] = []

    async def pump_broken() -> None:
        try:
            await intake.pump(PipeChild(Outlet(broken_read)), broken)
        except RuntimeError as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(intake.pump, flood, flooded)
        tg.start_soon(intake.pump, PipeChild(Outlet(quiet_read)), quiet)
        tg.start_soon(pump_broken)
        await flooded.until(lambda: flooded.size > 8 << 20)  # the flood in its turns
        os.write(broken_write, b"boom\n")
        for n in range(20):  # each line read while the flood goes on
            os.write(quiet_write, b"quiet %d\n" % n)
            await quiet.until(b"".join(b"quiet %d\n" % i for i in range(n + 1)))
        before = flooded.size
        await flooded.until(lambda: flooded.size > before + (1 << 20))  # not starved either
        assert [str(exc) for exc in failures] == ["this app's log broke"]
        os.close(quiet_write)
        flood.signal_group(9)
        assert await flood.wait() != 0
    await flood.aclose()
    assert flooded.odd <= 1  # every line whole, but the one cut by the kill
    assert intake.paused == 0
    for fd in (quiet_read, broken_read, broken_write):
        os.close(fd)


ENDLESS = """
import os, sys, time
for _ in range(128):
    os.write(1, b"a" * 65536)  # 8 MiB, not one newline
sys.stdout.flush()
time.sleep(1000)
"""


@pytest.mark.parametrize("through", ["pipe", "fifo"])
async def test_a_line_that_never_ends_is_written_in_pieces(through: str, tmp_path: Path) -> None:
    received = Counted()
    (tmp_path / "endless.py").write_text(ENDLESS)
    fifo: Fifo | None = None
    if through == "fifo":  # as a kept process writes: the FIFO holds a tail line too
        fifo, write = Fifo.make(tmp_path / "out")
        outlet = fifo.outlet(Keeper(tmp_path / "run", OsSpawner()))
        assert outlet is not None
        read = -1
    else:
        read, write = nonblocking_pipe()
        outlet = Outlet(read)
    with open(os.devnull, "rb") as nothing:
        writer = await anyio.open_process(
            [sys.executable, "endless.py"], stdin=nothing, stdout=write, cwd=tmp_path
        )
    os.close(write)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(Intake(Sink()).pump, PipeChild(outlet), received)
            # All of it written while the writer still holds its end open: nothing waits
            # for a newline that never comes.
            await received.until(lambda: received.size >= (8 << 20) - MAX_LINE)
            assert writer.returncode is None
            assert received.longest <= len(CONTINUED) + MAX_LINE + len(CONTINUES)
            writer.kill()
            await writer.wait()
    finally:
        if writer.returncode is None:
            writer.kill()
            await writer.wait()
        if fifo is not None:
            fifo.close()
        else:
            os.close(read)
    assert received.size >= 8 << 20  # the rest at the end


class CountingIntake(Intake):
    """The intake, counting how often a held partial line's timer fires."""

    fired = 0

    def _partial_due(self, pipe: Pipe) -> None:
        self.fired += 1
        super()._partial_due(pipe)


async def test_held_lines_do_not_spin_while_the_log_is_behind() -> None:
    """While the log is behind, every pipe's held partial line waits; each looks again
    every PARTIAL_LINE_DELAY, not every BURST_PAUSE (200 apps holding a prompt were 28,500
    timer callbacks a second, 22% of a core, feeding the very backlog they waited for)."""
    sink = Sink()
    intake = CountingIntake(sink)
    pipes = [nonblocking_pipe() for _ in range(20)]
    received = [Received() for _ in pipes]
    async with anyio.create_task_group() as tg:
        for (read, write), got in zip(pipes, received, strict=True):
            tg.start_soon(intake.pump, PipeChild(Outlet(read)), got)
            os.write(write, b"prompt> ")
        await anyio.sleep(0.01)
        sink.behind = True
        before = intake.fired
        await anyio.sleep(5 * PARTIAL_LINE_DELAY)
        assert intake.fired - before <= 20 * 7  # at most one a PARTIAL_LINE_DELAY each
        sink.behind = False
        for got in received:  # written once the log caught up
            await got.until(b"prompt> \n")
        for _, write in pipes:
            os.close(write)
    for read, _ in pipes:
        os.close(read)


async def test_a_paused_pipe_s_number_reused_by_another_slot_is_read_only_by_it() -> None:
    """A pipe that waits for the next turn (a burst) when its pump ends, its descriptor
    closed and the number given to another slot's pipe before that turn: the turn reads
    the new pipe for nobody; only its own pump reads it."""
    sink = Sink()
    intake = Intake(sink)
    read, write = nonblocking_pipe()
    first = Received()
    async with anyio.create_task_group() as tg:
        tg.start_soon(intake.pump, PipeChild(Outlet(read)), first)
        os.write(write, b"b" * BURST + b"\n")
        await first.until(b"b" * BURST + b"\n")
        sink.behind = True  # from now on each turn puts it back: it stays paused
        os.write(write, b"b" * BURST + b"\n")
        await anyio.sleep(3 * BURST_PAUSE)
        assert intake.paused == 1
        tg.cancel_scope.cancel()
    os.close(read)
    os.close(write)
    again, write = nonblocking_pipe()
    assert again == read
    os.write(write, b"the other slot's line\n")
    sink.behind = False
    await anyio.sleep(3 * BURST_PAUSE)  # the turn the old pipe waited for has come
    second = Received()
    os.close(write)
    with anyio.fail_after(10):
        await intake.pump(PipeChild(Outlet(again)), second)
    assert second.data == b"the other slot's line\n"
    assert first.data == (b"b" * BURST + b"\n") * 2  # its unread line, read at its end
    os.close(again)


async def test_lines_left_in_the_pipe_are_written_when_the_pump_is_cut_short() -> None:
    """A slot waits DRAIN_AFTER_EXIT for the end of its pipe, then cancels the pump: while
    the log is behind nothing was read meanwhile, and the process's last lines (in the
    pipe, before its end) must still be written, not dropped with the pipe."""
    sink = Sink()
    intake = Intake(sink)
    read, write = nonblocking_pipe()
    received = Received()
    async with anyio.create_task_group() as tg:
        tg.start_soon(intake.pump, PipeChild(Outlet(read)), received)
        os.write(write, b"b" * BURST + b"\n")
        await received.until(b"b" * BURST + b"\n")
        sink.behind = True
        os.write(write, b"last words\nno newline")
        os.close(write)
        await anyio.sleep(3 * BURST_PAUSE)
        tg.cancel_scope.cancel()  # the slot's drain timed out
    assert received.data == b"b" * BURST + b"\nlast words\nno newline\n"
    os.close(read)
