"""The intake on real pipes, FIFOs and processes: every line whole, once and in order from
many fast writers; a partial line written after a pause; nothing read while frozen or while
the log is behind; a failure raised in the pump's task; a cancelled pump leaves no reader."""

import itertools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from dokuen.supervise.intake import BURST, PARTIAL_LINE_DELAY, READ_SIZE, Intake, Outlet
from dokuen.supervise.keeper import Fifo, Keeper
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.spawn import OsSpawner

pytestmark = pytest.mark.anyio

WRITER = """\
import os, sys
ident, count = sys.argv[1], int(sys.argv[2])
for seq in range(count):  # one write per line, as a logger that flushes each record
    os.write(1, b"%s %07d %s\\n" % (ident.encode(), seq, b"x" * 60))
"""


class Sink:
    """The LogMux's side of the intake, with ``behind`` set by the test, and a clock a
    second later at each call: a timestamp shows which reads it was taken for."""

    def __init__(self) -> None:
        self.clock: Callable[[], float] = itertools.count(1_795_000_000).__next__
        self.behind = False

    async def backpressure(self) -> None:
        while self.behind:
            await anyio.sleep(0.01)


class Received:
    """What a pump delivered, and a way to wait for it."""

    def __init__(self) -> None:
        self.blocks: list[bytes] = []
        self.stamps: list[str | None] = []

    def __call__(self, block: bytes, stamp: str | None) -> None:
        self.blocks.append(block)
        self.stamps.append(stamp)

    @property
    def data(self) -> bytes:
        return b"".join(self.blocks)

    async def until(self, wanted: bytes) -> None:
        with anyio.fail_after(10):
            while self.data != wanted:
                await anyio.sleep(0.01)


def nonblocking_pipe() -> tuple[int, int]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    return read, write


class PipeChild:
    """A child that is only its output pipe."""

    def __init__(self, outlet: Outlet) -> None:
        self._outlet = outlet

    def outlet(self) -> Outlet:
        return self._outlet

    async def read(self, max_bytes: int) -> bytes:
        raise AssertionError("an outlet is read by the intake, never with read()")


async def test_many_fast_writers_every_line_whole_once_in_order(tmp_path: Path) -> None:
    writers, lines = 8, 20000
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 30, keep=1)
    spawner = OsSpawner()
    (tmp_path / "writer.py").write_text(WRITER)
    children = [
        await spawner(f"exec {sys.executable} writer.py w{n} {lines}", {}, tmp_path)
        for n in range(writers)
    ]
    assert all(child.outlet() is not None for child in children)

    async def pump(child: object, name: str) -> None:
        def deliver(block: bytes, stamp: str | None) -> None:
            mux.write_block("blog", name, block, stamp)

        await mux.intake.pump(child, deliver)  # type: ignore[arg-type]

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(mux.run)
            async with anyio.create_task_group() as pumps:
                for n, child in enumerate(children):
                    pumps.start_soon(pump, child, f"w{n}.1")
            for child in children:
                assert await child.wait() == 0
                await child.aclose()
            assert mux.intake.paused == 0  # every pipe ended: none waits for a turn
            tg.cancel_scope.cancel()
    seen = {f"w{n}": -1 for n in range(writers)}
    stamps = []
    for line in (tmp_path / "dokuen.log").read_bytes().splitlines():
        stamp, rest = line.split(b" ", 1)
        stamps.append(stamp)
        source, message = rest.split(b": ", 1)
        ident, seq, pad = message.split(b" ")
        assert source == b"blog[" + ident + b".1]"  # under the right process
        assert pad == b"x" * 60  # whole
        assert int(seq) == seen[ident.decode()] + 1  # once, in order
        seen[ident.decode()] = int(seq)
    assert seen == {f"w{n}": lines - 1 for n in range(writers)}
    assert stamps == sorted(stamps)


async def test_a_full_fifo_is_read_more_than_a_read_at_a_time(tmp_path: Path) -> None:
    keeper = Keeper(tmp_path / "run", OsSpawner())
    fifo, child_end = Fifo.make(tmp_path / "out")
    line = b"y" * 99 + b"\n"
    os.write(child_end, line * (8 * READ_SIZE // len(line)))  # 8 reads' worth waits
    received = Received()
    outlet = fifo.outlet(keeper)
    assert outlet is not None
    async with anyio.create_task_group() as tg:
        tg.start_soon(Intake(Sink()).pump, PipeChild(outlet), received)
        await received.until(line * (8 * READ_SIZE // len(line)))
        os.close(child_end)
    # The first read (as the FIFO became readable), then one turn for the seven others:
    # eight blocks, stamped at two moments.
    assert len(received.blocks) == 8
    assert len(set(received.stamps)) == 2
    fifo.close()


async def test_a_partial_line_is_written_after_a_pause_and_the_rest_at_the_end() -> None:
    read, write = nonblocking_pipe()
    received = Received()
    async with anyio.create_task_group() as tg:
        tg.start_soon(Intake(Sink()).pump, PipeChild(Outlet(read)), received)
        os.write(write, b"one\nprompt> ")
        await received.until(b"one\nprompt> \n")  # no newline ever comes: written anyway
        os.write(write, b"two\nlast words")
        os.close(write)
    assert received.data == b"one\nprompt> \ntwo\nlast words\n"
    os.close(read)


async def test_a_fifo_holds_a_partial_line_then_writes_it_after_a_pause(tmp_path: Path) -> None:
    keeper = Keeper(tmp_path / "run", OsSpawner())
    fifo, child_end = Fifo.make(tmp_path / "out")
    outlet = fifo.outlet(keeper)
    assert outlet is not None
    received = Received()
    async with anyio.create_task_group() as tg:
        tg.start_soon(Intake(Sink()).pump, PipeChild(outlet), received)
        os.write(child_end, b"one\ntw")
        await received.until(b"one\ntw\n")
        os.close(child_end)
    assert received.blocks == [b"one\n", b"tw\n"]
    fifo.close()


async def test_a_frozen_keeper_leaves_its_fifos_unread_until_thawed(tmp_path: Path) -> None:
    keeper = Keeper(tmp_path / "run", OsSpawner())
    fifo, child_end = Fifo.make(tmp_path / "out")
    keeper.fifos_open.add(fifo)
    outlet = fifo.outlet(keeper)
    assert outlet is not None
    received = Received()
    async with anyio.create_task_group() as tg:
        tg.start_soon(Intake(Sink()).pump, PipeChild(outlet), received)
        os.write(child_end, b"one\ntw")
        await received.until(b"one\n")
        keeper.frozen = True
        os.write(child_end, b"o\nthree\n")
        await anyio.sleep(0.5)  # longer than a partial line waits: still held, still unread
        assert received.data == b"one\n"
        generation = keeper.freeze()  # a re-exec's next step: the held line is carried
        assert fifo.carry_file.read_bytes() == generation.encode() + b"\ntw"
        keeper.thaw()  # the re-exec failed: the same image reads on, and keeps the line
        assert not fifo.carry_file.exists()
        await received.until(b"one\ntwo\nthree\n")
        os.close(child_end)
    fifo.close()


async def test_a_line_carried_across_a_re_exec_is_written_even_if_nothing_follows(
    tmp_path: Path,
) -> None:
    fifo, child_end = Fifo.make(tmp_path / "out")
    fifo.carry_file.write_bytes(b"gen\nprompt> ")  # what the old image held back at its re-exec
    fifo._reader, reader = -1, fifo._reader
    os.close(reader)
    again = Fifo.reopen(tmp_path / "out", "gen")  # the new image, handed that generation
    assert again is not None
    outlet = again.outlet(Keeper(tmp_path / "run", OsSpawner()))
    assert outlet is not None
    received = Received()
    async with anyio.create_task_group() as tg:
        tg.start_soon(Intake(Sink()).pump, PipeChild(outlet), received)
        await received.until(b"prompt> \n")  # no byte follows: written after the pause
        os.close(child_end)
    again.close()


async def test_nothing_is_read_while_the_log_is_behind() -> None:
    read, write = nonblocking_pipe()
    sink = Sink()
    received = Received()
    async with anyio.create_task_group() as tg:
        tg.start_soon(Intake(sink).pump, PipeChild(Outlet(read)), received)
        os.write(write, b"a" * BURST + b"\n")  # a burst: the pipe waits for the next turn
        await received.until(b"a" * BURST + b"\n")
        sink.behind = True
        os.write(write, b"held back\n")
        await anyio.sleep(0.1)  # twenty turns
        assert received.data == b"a" * BURST + b"\n"
        sink.behind = False
        await received.until(b"a" * BURST + b"\nheld back\n")
        os.close(write)
    os.close(read)


async def test_a_line_is_never_cut_while_the_log_is_behind() -> None:
    read, write = nonblocking_pipe()
    sink = Sink()
    received = Received()
    async with anyio.create_task_group() as tg:
        tg.start_soon(Intake(sink).pump, PipeChild(Outlet(read)), received)
        os.write(write, b"one\nthe start of a line ")
        await received.until(b"one\n")
        sink.behind = True  # its rest comes while nothing is read: it waits in the pipe
        os.write(write, b"and its end\n")
        await anyio.sleep(3 * PARTIAL_LINE_DELAY)
        assert received.data == b"one\n"  # not written as a line of its own
        sink.behind = False
        await received.until(b"one\nthe start of a line and its end\n")
        os.close(write)
    os.close(read)


async def test_a_failure_in_the_callback_is_raised_by_the_pump() -> None:
    read, write = nonblocking_pipe()

    def deliver(block: bytes, stamp: str | None) -> None:
        raise RuntimeError("the log broke")

    os.write(write, b"line\n")
    with anyio.fail_after(10), pytest.raises(RuntimeError, match="the log broke"):
        await Intake(Sink()).pump(PipeChild(Outlet(read)), deliver)
    os.close(read)
    os.close(write)


async def test_a_cancelled_pump_writes_its_partial_line_and_leaves_no_reader() -> None:
    intake = Intake(Sink())
    read, write = nonblocking_pipe()
    received = Received()
    async with anyio.create_task_group() as tg:
        tg.start_soon(intake.pump, PipeChild(Outlet(read)), received)
        os.write(write, b"whole\ncut")
        await received.until(b"whole\n")
        tg.cancel_scope.cancel()
    assert received.data == b"whole\ncut\n"
    os.close(read)
    os.close(write)
    # The same descriptor number, another pipe: read by a new pump, and only by it.
    again, write = nonblocking_pipe()
    assert again == read
    other = Received()
    os.write(write, b"new\n")
    os.close(write)
    with anyio.fail_after(10):
        await intake.pump(PipeChild(Outlet(again)), other)
    assert other.data == b"new\n"
    assert received.data == b"whole\ncut\n"
    os.close(again)
