"""The router listener's batch: datagrams read into one buffer and rendered together at the
end of a turn. Odd datagrams (cut, holding a newline, empty, garbage) keep their place among
the usual ones, a turn bigger than the buffer loses nothing, /proc is read once per sender,
and the pause between turns shortens as the socket fills."""

import os
import socket
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from dokuen.proxy import listener as listener_module
from dokuen.proxy.listener import BUFFER, DATAGRAM, MIN_PAUSE, RouterListener
from dokuen.supervise.logmux import LogMux
from tests.test_router import datagram

pytestmark = pytest.mark.anyio


async def one_turn(
    tmp_path: Path, datagrams: list[bytes], master: Callable[[], int | None] = os.getppid
) -> tuple[RouterListener, list[str]]:
    """Send one datagram, then, while the listener pauses after reading it, ``datagrams``:
    they are read in the second turn, together. Returns the listener and the log's lines."""
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 30, keep=1)
    listener = RouterListener(tmp_path / "router.sock", mux, master, long_queue=0, pause=0.5)
    listener.update([("blog", "web.1", 5001), ("blog", "web.2", 5002)])
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(listener.run)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.connect(str(tmp_path / "router.sock"))
            sender.send(datagram(path="/first"))
            with anyio.fail_after(5):
                while listener.turns < 1:
                    await anyio.sleep(0.001)
            for data in datagrams:
                sender.send(data)
        with anyio.fail_after(5):
            while sum(listener.counts.values()) < len(datagrams) + 1:
                await anyio.sleep(0.01)
        await mux.drained()
        tg.cancel_scope.cancel()
    return listener, mux.path.read_text().splitlines()


async def test_odd_datagrams_keep_their_place_in_a_turn(tmp_path: Path) -> None:
    sent = [
        datagram(path="/1"),
        datagram(path="/2").replace(b"\t/2", b"\t/2\nx"),  # a raw newline: never from nginx
        datagram(path="/3", status="502", header="-"),
        datagram(path="/4" + "y" * DATAGRAM),  # longer than a read: cut
        b"",
        b"hello",
        datagram(path="/7", upstream="127.0.0.1:5002"),
    ]
    listener, lines = await one_turn(tmp_path, sent)
    assert listener.turns == 2
    assert listener.counts == {"lines": 6, "dropped": 0, "malformed": 2, "refused": 0, "unsent": 0}
    assert [line.split('path="')[1][:3] for line in lines] == [
        "/fi",
        '/1"',
        "/2\\",
        '/3"',
        "/4y",
        '/7"',
    ]
    assert all(" blog[router]: " in line for line in lines)
    assert len({line.split()[0] for line in lines[1:]}) == 1  # the second turn: one stamp
    assert 'path="/2\\nx" ' in lines[2]
    assert ' at=error code=H13 desc="Connection closed without response" ' in lines[3]
    assert '[cut]" host=blog.localhost ' in lines[4]
    assert " dyno=web.2 " in lines[5]


async def test_a_turn_bigger_than_the_buffer_loses_nothing(tmp_path: Path) -> None:
    """Datagrams of nearly 8 KiB: the batch is handed to the log before the next might not
    fit, in the middle of the turn, and the lines stay whole and in order."""
    size = 7500
    count = BUFFER // size + 2
    assert count <= 10  # the kernel's default queue holds them all
    sent = [datagram(path=f"/{n}" + "z" * size) for n in range(count)]
    listener, lines = await one_turn(tmp_path, sent)
    assert listener.counts["lines"] == count + 1
    assert [line.split('path="/')[1][:2] for line in lines[1:]] == [f"{n}z" for n in range(count)]
    assert all(line.endswith(" protocol=http") for line in lines)
    assert all(len(line) > size for line in lines[1:])


async def test_proc_is_read_once_per_sender_and_again_when_the_master_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked: list[int] = []
    parent = listener_module._parent

    def counting(pid: int, uid: int, gid: int) -> int | None:
        looked.append(pid)
        return parent(pid, uid, gid)

    monkeypatch.setattr(listener_module, "_parent", counting)
    # This process sends: its parent plays the master, then a master that is not its parent.
    master: list[int | None] = [os.getppid()]
    many = [datagram(path=f"/{n}") for n in range(8)]
    listener, _ = await one_turn(tmp_path, many, lambda: master[0])
    assert listener.counts["lines"] == 9
    assert looked == [os.getpid()]  # once, for nine datagrams
    looked.clear()
    master[0] = os.getpid()  # a new master: what was known of the senders is forgotten
    listener, _ = await one_turn(tmp_path / "again", many, lambda: master[0])
    assert listener.counts["refused"] == 9
    assert looked == [os.getpid()]  # and a refused sender is not looked up again either


def test_the_pause_shortens_as_the_socket_or_a_sender_s_buffer_fills() -> None:
    """The next turn comes before the socket's queue (512) or the busiest sender's buffer
    (208 KiB: 166 datagrams of 250 bytes) is half full, at the rate of the turn before."""
    mux = LogMux(Path("/nonexistent/dokuen.log"), max_bytes=1 << 20, keep=1)
    listener = RouterListener(Path("/nonexistent/router.sock"), mux, lambda: None, pause=0.02)
    listener.queue, listener.send_buffer = 512, 212992
    assert listener._next_pause(100, 50, 25000, 1000.0) == 0.02  # the first turn
    # 5,000 a second from two workers: 50 each by the next turn, under half of 166
    assert listener._next_pause(100, 50, 25000, 1000.02) == 0.02
    # the same from one worker: 100 of its 166 by the next turn, too many
    assert listener._next_pause(100, 100, 25000, 1000.04) == pytest.approx(0.02 * 83 / 100)
    # 25,600 a second from many senders: the queue's half (256) in 10 ms
    assert listener._next_pause(512, 20, 128000, 1000.06) == pytest.approx(0.01)
    assert listener._next_pause(512, 20, 128000, 1000.061) == MIN_PAUSE  # 512,000 a second
    assert listener._next_pause(1, 1, 250, 1010.0) == 0.02  # quiet again
    listener.send_buffer = 0  # unknown: the queue alone
    assert listener._next_pause(100, 100, 25000, 1010.02) == 0.02


async def test_nul_bytes_neither_split_a_turn_nor_take_an_odd_datagram_s_place(
    tmp_path: Path,
) -> None:
    """A datagram that is the batch's own mark for an odd one (a single NUL byte), one with
    a NUL and a newline, and a request with a NUL in its path, among usual ones: each is
    one line or one malformed count, in its place; no line is shifted or shown twice."""
    sent = [
        datagram(path="/1"),
        b"\0",
        b"\0\n\0",
        datagram(path="/4").replace(b"\t/4", b"\t/4\0z"),
        datagram(path="/5"),
    ]
    listener, lines = await one_turn(tmp_path, sent)
    assert listener.counts == {"lines": 4, "dropped": 0, "malformed": 2, "refused": 0, "unsent": 0}
    assert [line.split('path="')[1][:3] for line in lines] == ["/fi", '/1"', "/4\\", '/5"']
    assert 'path="/4\\u0000z" ' in lines[2]
