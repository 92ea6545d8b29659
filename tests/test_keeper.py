"""The FIFOs that carry a process's output across a dokuend crash or re-exec: what is
written while no daemon reads waits in the pipe, a new reader drains it by path, the
writer never gets EPIPE, and the end of file comes when the last writer is gone."""

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from dokuen.supervise import handed
from dokuen.supervise.keeper import Fifo, Keeper
from dokuen.supervise.record import ProcessRecord
from dokuen.supervise.spawn import OsSpawner

pytestmark = pytest.mark.anyio

WRITER = """\
import os, signal, sys, time
signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # an EPIPE would kill it
for n in range(1, 2001):
    sys.stdout.write(f"line {n}\\n")
    sys.stdout.flush()
"""


async def read_all(fifo: Fifo, keeper: Keeper) -> bytes:
    chunks = []
    with anyio.fail_after(20):
        while chunk := await fifo.read(1 << 16, keeper):
            chunks.append(chunk)
    return b"".join(chunks)


async def test_the_writer_never_gets_epipe_while_no_daemon_reads(tmp_path: Path) -> None:
    path = tmp_path / "out"
    fifo, child_end = Fifo.make(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    writer = subprocess.Popen([sys.executable, "-c", WRITER], stdout=child_end)
    os.close(child_end)
    fifo.close()  # the daemon dies before it read a byte
    # SIGPIPE is fatal to it, yet it writes its 2000 lines: it holds a reader itself.
    assert writer.wait(20) == 0


async def test_a_new_reader_drains_what_a_running_writer_left(tmp_path: Path) -> None:
    keeper = Keeper(tmp_path / "run", OsSpawner())
    path = tmp_path / "out"
    fifo, child_end = Fifo.make(path)
    gate = tmp_path / "gate"
    program = (
        WRITER
        + f"import pathlib\nwhile not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.01)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", program], stdout=child_end)
    os.close(child_end)
    os.close(fifo._reader)
    fifo._reader = -1
    again = Fifo.reopen(path)
    assert again is not None
    while True:  # the 2000 lines are all written into the pipe with no reader at all
        with anyio.move_on_after(0.05):
            await anyio.wait_readable(again._reader)
            break
    gate.touch()
    data = await read_all(again, keeper)
    assert writer.wait(20) == 0
    assert data.decode().splitlines() == [f"line {n}" for n in range(1, 2001)]
    again.close()
    assert not path.exists()


async def test_a_frozen_keeper_reads_nothing_until_thawed(tmp_path: Path) -> None:
    keeper = Keeper(tmp_path / "run", OsSpawner())
    fifo, child_end = Fifo.make(tmp_path / "out")
    os.write(child_end, b"held\n")
    keeper.frozen = True
    with anyio.move_on_after(0.2) as waited:
        await fifo.read(100, keeper)
    assert waited.cancelled_caught
    keeper.frozen = False
    assert await fifo.read(100, keeper) == b"held\n"
    os.close(child_end)
    assert await fifo.read(100, keeper) == b""
    fifo.close()


async def test_a_line_cut_by_a_re_exec_is_carried_whole_to_the_next_image(
    tmp_path: Path,
) -> None:
    keeper = Keeper(tmp_path / "run", OsSpawner())
    path = tmp_path / "out"
    fifo, child_end = Fifo.make(path)
    keeper.fifos_open.add(fifo)
    os.write(child_end, b"one\ntw")
    assert await fifo.read(100, keeper) == b"one\n"  # whole lines only
    keeper.frozen = True
    await anyio.sleep(0.3)  # longer than the hold-back: still kept, since it is frozen
    generation = keeper.freeze()
    assert fifo.carry_file.read_bytes() == generation.encode() + b"\ntw"
    os.write(child_end, b"o\nthree\n")  # the rest arrives while no daemon reads
    os.close(fifo._reader)
    fifo._reader = -1
    thawed = Keeper(tmp_path / "run", OsSpawner())  # the next image, on the same run dir
    assert thawed.generation.taken() == generation
    assert not thawed.generation.file.exists()  # read once
    assert thawed.generation.taken() == generation
    assert Keeper(tmp_path / "run", OsSpawner()).generation.taken() is None  # and for no one else
    again = Fifo.reopen(path, generation)
    assert again is not None
    assert not again.carry_file.exists()
    assert await again.read(100, thawed) == b"two\nthree\n"
    os.write(child_end, b"prompt> ")  # no newline ever comes: handed out after a moment
    assert await again.read(100, thawed) == b"prompt> "
    os.close(child_end)
    assert await again.read(100, thawed) == b""
    again.close()


def test_take_hands_out_whole_lines_and_holds_the_rest(tmp_path: Path) -> None:
    fifo, child_end = Fifo.make(tmp_path / "out")
    os.close(child_end)
    assert fifo.take(b"one\ntw", 100) == b"one\n"
    assert fifo.held
    assert fifo.take(b"o", 100) == b""  # still no newline: all of it held
    assert fifo.take(b"\nthree\nfo", 100) == b"two\nthree\n"
    assert fifo.release() == b"fo"
    assert not fifo.held
    assert fifo.take(b"x" * 100, 100) == b"x" * 100  # a full read with no newline goes on
    assert not fifo.held
    fifo.close()


async def test_a_failed_re_exec_leaves_no_carry_file_and_the_old_image_keeps_the_line(
    tmp_path: Path,
) -> None:
    """The execve failed: the image that goes on still holds the line and hands it out
    itself; its carry file is gone, so no later image puts it in front a second time."""
    keeper = Keeper(tmp_path / "run", OsSpawner())
    path = tmp_path / "out"
    fifo, child_end = Fifo.make(path)
    keeper.fifos_open.add(fifo)
    os.write(child_end, b"one\ntw")
    assert await fifo.read(100, keeper) == b"one\n"
    keeper.freeze()
    assert fifo.carry_file.exists()
    keeper.thaw()
    assert not keeper.frozen
    assert not fifo.carry_file.exists()
    assert Keeper(tmp_path / "run", OsSpawner()).generation.taken() is None
    os.write(child_end, b"o\n")
    assert await fifo.read(100, keeper) == b"two\n"  # from this image, once
    os.close(fifo._reader)
    fifo._reader = -1
    again = Fifo.reopen(path, "next")  # a next image finds nothing to put in front
    assert again is not None
    assert not again.held
    os.close(child_end)
    again.close()


@pytest.mark.parametrize(
    "content",
    [b"old\nstale line", b"stale line without a mark", b"", b"new"],
    ids=["other generation", "no mark", "empty", "mark without its newline"],
)
def test_a_carry_file_of_another_generation_is_dropped_not_put_in_front(
    tmp_path: Path, content: bytes
) -> None:
    """A carry file that is not this image's (a dokuend killed during a re-exec, an
    attempt that failed) is removed and its line not handed out again."""
    path = tmp_path / "out"
    fifo, child_end = Fifo.make(path)
    fifo.carry_file.write_bytes(content)
    again = Fifo.reopen(path, "new")
    assert again is not None
    assert not again.held
    assert not again.carry_file.exists()
    fifo.carry_file.write_bytes(b"new\nkept")  # this image's: put in front, once
    third = Fifo.reopen(path, "new")
    assert third is not None
    assert third.release() == b"kept"
    assert not third.carry_file.exists()
    fifo.carry_file.write_bytes(b"new\nkept")
    plain = Fifo.reopen(path, None)  # a plain start (after a crash) takes no carry file
    assert plain is not None
    assert not plain.held
    assert not fifo.carry_file.exists()
    for reader in (fifo, again, third, plain):
        os.close(reader._reader)
        reader._reader = -1
    os.close(child_end)
    fifo.close()


def test_a_handed_over_reader_keeps_what_a_process_that_exited_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-exec hands the readers over (handed.py): a process that exits meanwhile, its
    FIFO held by nobody else, leaves its lines to the new image, which logs them through
    ``leftover`` (and removes the FIFO and the record); a descriptor named for a FIFO path
    that is now another file is closed, never read."""
    keeper = Keeper(tmp_path / "run", OsSpawner())
    path, other = tmp_path / "out", tmp_path / "other"
    fifo, child_end = Fifo.make(path)
    stale, stale_end = Fifo.make(other)
    os.close(stale_end)
    keeper.fifos_open |= {fifo, stale}
    writer = subprocess.Popen([sys.executable, "-c", WRITER], stdout=child_end)
    os.close(child_end)
    assert writer.wait(20) == 0
    value = keeper.hand()
    assert os.get_inheritable(fifo._reader)
    assert os.get_inheritable(stale._reader)
    stale_inode = os.fstat(stale._reader).st_ino
    other.unlink()
    os.mkfifo(other)  # the same path, another FIFO: its old reader is not for it
    monkeypatch.setenv(handed.FIFO_FDS, value)
    handed.take()  # the new image (the old one's objects are simply forgotten)
    assert handed.FIFO_FDS not in os.environ
    assert not os.get_inheritable(fifo._reader)
    record = ProcessRecord(1, 1, "blog", "burst.1", "v1", None, None, str(path))
    keeper.records.write(record)
    left = keeper.leftover(record)
    assert left == b"".join(f"line {n}\n".encode() for n in range(1, 2001))
    assert not path.exists()
    assert keeper.records.load() == []
    assert handed.claim(str(other)) is None  # closed, not handed out for the new FIFO
    try:
        still = os.fstat(stale._reader).st_ino == stale_inode
    except OSError:
        still = False
    assert not still, "the reader of the replaced FIFO was left open"
    handed.close_rest()
