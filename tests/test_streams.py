"""The streams of an attached child (supervise/streams.py): what a client may ask for, and
real children on real pipes and a real pty through OsSpawner."""

import os
import stat
from pathlib import Path

import anyio
import pytest

from dokuen.errors import ProtocolError
from dokuen.supervise.spawn import OsSpawner
from dokuen.supervise.streams import Streams, WindowSize, check_term

pytestmark = pytest.mark.anyio
ENV = {"PATH": "/usr/bin:/bin"}


@pytest.mark.parametrize(
    "value", [[24, 80], [0, 0], [10_000, 10_000]], ids=["usual", "zero", "largest"]
)
def test_window_sizes_a_client_may_send(value: list[int]) -> None:
    assert WindowSize.parse(value) == WindowSize(value[0], value[1])


@pytest.mark.parametrize(
    "value",
    [[24], [24, 80, 1], [-1, 80], [24, 10_001], ["24", "80"], [24.0, 80], [True, 80], None],
)
def test_window_sizes_that_are_refused(value: object) -> None:
    with pytest.raises(ProtocolError, match=r"^a window size must be \[rows, cols\]"):
        WindowSize.parse(value)


@pytest.mark.parametrize("term", ["xterm-256color", "screen.xterm-256color", "vt100", "rxvt+x"])
def test_terminal_types_passed_through(term: str) -> None:
    assert check_term(term) == term


@pytest.mark.parametrize("term", ["", "xterm\n", "x" * 65, "../../x", "-x", "a b", 7, None])
def test_terminal_types_that_are_refused(term: object) -> None:
    with pytest.raises(ProtocolError, match="'term' must be a terminal type"):
        check_term(term)


async def read_all(streams: Streams) -> bytes:
    chunks = []
    while chunk := await streams.read(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def test_pipes_carry_stdin_to_its_end_and_every_byte_back(tmp_path: Path) -> None:
    streams = Streams(None)
    try:
        child = await OsSpawner()("cat; echo end", ENV, tmp_path, stdio=streams.stdio)
        streams.spawned()
        data = bytes(range(256)) * 1024
        with anyio.fail_after(10):

            async def feed() -> None:
                await streams.write(data)  # more than a pipe holds: cat must read as we go
                await streams.end_input()

            async with anyio.create_task_group() as tg:
                tg.start_soon(feed)
                output = await read_all(streams)
            assert await child.wait() == 0
        # The whole copy came back before "end": EOF reached cat only after all of it.
        assert output == data + b"end\n"
    finally:
        streams.close()


async def test_a_pty_is_the_childs_controlling_terminal_in_its_own_session(
    tmp_path: Path,
) -> None:
    streams = Streams(WindowSize(30, 90))
    try:
        script = 'stty size; ps -o sid=,tty= -p $$; [ "$(ps -o pgid= -p $$)" -eq $$ ] && echo lead'
        child = await OsSpawner()(script, ENV, tmp_path, stdio=streams.stdio)
        streams.spawned()
        with anyio.fail_after(10):
            output = (await read_all(streams)).decode()
            assert await child.wait() == 0
    finally:
        streams.close()
    lines = output.split("\r\n")
    assert lines[0] == "30 90"
    sid, tty = lines[1].split()
    assert int(sid) == child.pid  # a session of its own, led by the child itself
    assert tty.startswith("pts/")  # ...whose controlling terminal is the pty
    assert lines[2] == "lead"  # and its own process group, which a stop signals


async def test_a_resize_reaches_the_child_as_sigwinch(tmp_path: Path) -> None:
    streams = Streams(WindowSize(24, 80))
    try:
        script = "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done"
        child = await OsSpawner()(script, ENV, tmp_path, stdio=streams.stdio)
        streams.spawned()
        with anyio.fail_after(10):
            seen = b""
            while b"ready" not in seen:
                seen += await streams.read(1024)
            streams.resize(WindowSize(50, 132))
            seen += await read_all(streams)
            assert await child.wait() == 0
        assert b"50 132" in seen
    finally:
        streams.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives a terminal to another uid")
def test_the_terminal_is_given_to_the_apps_uid() -> None:
    streams = Streams(WindowSize(24, 80))
    try:
        streams.give_to(4242)
        slave = os.fstat(streams.stdio.stdin)
        assert (slave.st_uid, stat.S_IMODE(slave.st_mode)) == (4242, 0o620)
    finally:
        streams.close()
