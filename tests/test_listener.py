"""The router socket: who may write to it, and what happens when the log is behind."""

import os
import socket
import struct
from pathlib import Path

import anyio
import pytest

from dokuen.proxy.listener import RouterListener
from dokuen.supervise.logmux import LogMux

pytestmark = pytest.mark.anyio
GOOD = (
    b"<190>Dec  6 09:01:02 dokuen: blog serving 200 GET 0f1e2d3c4b5a69788796a5b4c3d2e1f0 "
    b"127.0.0.1 1234 http blog.localhost\t127.0.0.1:5001|0.001|0.000|0.002\t/%d"
)


async def exchange(
    tmp_path: Path, mux: LogMux, master: int | None, datagrams: list[bytes]
) -> RouterListener:
    """Run a listener, send ``datagrams`` from this process, and wait until it read them."""
    listener = RouterListener(tmp_path / "router.sock", mux, lambda: master)
    listener.update([("blog", "web.1", 5001)])
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(listener.run)
        assert (tmp_path / "router.sock").stat().st_mode & 0o777 == 0o666
        # As nginx does, by a short name (it uses one relative to its prefix).
        directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            for data in datagrams:
                sender.sendto(data, f"/proc/self/fd/{directory}/router.sock")
        os.close(directory)
        with anyio.fail_after(5):
            while sum(listener.counts.values()) < len(datagrams):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert not (tmp_path / "router.sock").exists()
    return listener


async def test_lines_from_the_master_s_children_reach_the_log(tmp_path: Path) -> None:
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 20, keep=1)
    # This test process is the sender, so its parent plays the nginx master.
    listener = await exchange(tmp_path, mux, os.getppid(), [GOOD % 1, b"garbage", GOOD % 2])
    assert listener.counts == {"lines": 2, "dropped": 0, "malformed": 1, "refused": 0, "unsent": 0}
    text = mux.path.read_text()
    assert ' blog[router]: at=info method=GET path="/1" ' in text
    assert " dyno=web.1 " in text
    assert 'path="/2"' in text


async def test_a_sender_that_is_not_an_nginx_worker_is_refused(tmp_path: Path) -> None:
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 20, keep=1)
    listener = await exchange(tmp_path, mux, os.getpid(), [GOOD % 1])  # we are no child of us
    assert listener.counts == {"lines": 0, "dropped": 0, "malformed": 0, "refused": 1, "unsent": 0}
    listener = await exchange(tmp_path, mux, None, [GOOD % 1])  # nginx is down
    assert listener.counts["refused"] == 1
    assert mux.path.read_text() == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="claiming another uid takes CAP_SETUID")
async def test_a_worker_s_pid_with_another_sender_s_uid_is_refused(tmp_path: Path) -> None:
    """A sender that exited, its pid given to an nginx worker before its datagram was read:
    the kernel's credentials name that pid with the sender's uid and gid, not the
    worker's. Played here by claiming this process's pid with another uid (as root may):
    refused, though this pid is the master's child; and a trusted sender's pid, taken
    within the 2 s its credentials are kept by a process of another uid, is refused too."""
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 20, keep=1)
    listener = RouterListener(tmp_path / "router.sock", mux, os.getppid)
    listener.update([("blog", "web.1", 5001)])
    me = struct.pack("3i", os.getpid(), os.getuid(), os.getgid())
    other = struct.pack("3i", os.getpid(), 4242, 4242)
    sends = [(GOOD % 1, other), (GOOD % 2, me), (GOOD % 3, other)]
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(listener.run)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            for data, creds in sends:
                cmsg = [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)]
                sender.sendmsg([data], cmsg, 0, str(tmp_path / "router.sock"))
                with anyio.fail_after(5):
                    while sum(listener.counts.values()) < sends.index((data, creds)) + 1:
                        await anyio.sleep(0.01)
        await mux.drained()
        tg.cancel_scope.cancel()
    assert listener.counts["refused"] == 2
    assert listener.counts["lines"] == 1
    text = mux.path.read_text()
    assert 'path="/2"' in text
    assert 'path="/1"' not in text
    assert 'path="/3"' not in text


@pytest.mark.parametrize("trusted", [True, False])
async def test_descriptors_sent_with_datagrams_never_land_in_dokuend(
    tmp_path: Path, trusted: bool
) -> None:
    """The socket is writable by every user: a sender may attach file descriptors
    (SCM_RIGHTS) to each datagram. The listener's ancillary buffer holds the credentials
    alone, so the kernel installs none of them: dokuend's descriptors do not grow."""
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 20, keep=1)
    master = os.getppid() if trusted else os.getpid()
    listener = RouterListener(tmp_path / "router.sock", mux, lambda: master)
    listener.update([("blog", "web.1", 5001)])
    sent = 60
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(listener.run)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            before = len(os.listdir("/proc/self/fd"))
            read, write = os.pipe()
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("3i", read, write, 0))]
            for n in range(sent):
                sender.sendmsg([GOOD % n], rights, 0, str(tmp_path / "router.sock"))
                if n % 8 == 7:  # within the socket's queue (10 where nothing raised it)
                    with anyio.fail_after(5):
                        while sum(listener.counts.values()) < n + 1:
                            await anyio.sleep(0.005)
            os.close(read)
            os.close(write)
            with anyio.fail_after(5):
                while sum(listener.counts.values()) < sent:
                    await anyio.sleep(0.01)
            after = len(os.listdir("/proc/self/fd"))
        tg.cancel_scope.cancel()
    assert after <= before, f"{after - before} descriptors came in with the datagrams"
    assert listener.counts["lines" if trusted else "refused"] == sent


async def test_lines_are_dropped_and_counted_while_the_log_writer_is_behind(
    tmp_path: Path,
) -> None:
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 20, keep=1, high_water=0)
    listener = await exchange(tmp_path, mux, os.getppid(), [GOOD % n for n in range(5)])
    # All five wait in the socket; the first line puts the writer over its high-water mark
    # (it runs only once the listener yields): the other four are dropped and counted.
    assert listener.counts == {"lines": 1, "dropped": 4, "malformed": 0, "refused": 0, "unsent": 0}


async def test_a_home_too_long_for_a_socket_address_still_gets_router_lines(
    tmp_path: Path,
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 20, keep=1)
    listener = await exchange(deep, mux, os.getppid(), [GOOD % 7])
    assert listener.problem is None
    assert listener.counts["lines"] == 1


async def test_a_socket_that_cannot_be_made_leaves_a_problem_not_a_crash(tmp_path: Path) -> None:
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 20, keep=1)
    listener = RouterListener(tmp_path / "missing-dir" / "router.sock", mux, lambda: None)
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run)
    assert listener.problem is not None
    assert "no router lines: cannot bind" in listener.problem


def test_what_nginx_could_not_send_is_counted_from_its_error_log(tmp_path: Path) -> None:
    """nginx logs a warning for each datagram the full socket did not take: status counts
    those written since this dokuend started, and keeps counting across a rotation."""
    errors = tmp_path / "logs" / "error.log"
    errors.parent.mkdir()
    warning = b"2026/12/06 14:45:55 [warn] 7#7: *%d send() to syslog failed while logging request\n"
    errors.write_bytes(warning % 1)  # an earlier dokuend's
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 20, keep=1)
    listener = RouterListener(tmp_path / "router.sock", mux, lambda: None)
    assert listener.status()["unsent"] == 0
    with errors.open("ab") as log:
        log.write(warning % 2 + b"2026/12/06 14:45:56 [warn] 7#7: something else\n" + warning % 3)
    assert listener.status()["unsent"] == 2
    assert listener.status()["unsent"] == 2  # each line counted once
    errors.write_bytes(warning % 4)  # rotated: a new, shorter file
    assert listener.status()["unsent"] == 3
    errors.unlink()
    assert listener.status()["unsent"] == 3


class Ticks:
    """A clock for the log's stamps that moves on at every reading: one stamp, one write."""

    def __init__(self) -> None:
        self.now = 1_765_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


async def trickle(tmp_path: Path, long_queue: int, pause: float) -> tuple[RouterListener, LogMux]:
    """Send six datagrams 20 ms apart, the loop free in between (each could be read on its
    own), then wait until all six are in the log."""
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 20, keep=1, clock=Ticks())
    listener = RouterListener(
        tmp_path / "router.sock", mux, os.getppid, long_queue=long_queue, pause=pause
    )
    listener.update([("blog", "web.1", 5001)])
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(listener.run)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.connect(str(tmp_path / "router.sock"))
            sender.send(GOOD % 0)
            with anyio.fail_after(5):
                while listener.turns < 1:
                    await anyio.sleep(0.001)
            for n in range(1, 6):
                await anyio.sleep(0.02)
                sender.send(GOOD % n)
        with anyio.fail_after(5):
            while listener.counts["lines"] < 6:
                await anyio.sleep(0.01)
        await mux.drained()
        tg.cancel_scope.cancel()
    return listener, mux


def stamps_and_paths(mux: LogMux) -> tuple[list[str], list[str]]:
    lines = mux.path.read_text().splitlines()
    return [line.split()[0] for line in lines], [line.split('path="')[1][:2] for line in lines]


async def test_a_long_queue_is_read_in_turns_a_burst_in_one_wakeup(tmp_path: Path) -> None:
    """Where the socket holds many datagrams (systemd's 512), the listener drains it and
    then leaves it alone for a pause: what came meanwhile is read whole, in one wakeup, in
    the order it was sent, and handed to the log with one stamp."""
    listener, mux = await trickle(tmp_path, long_queue=0, pause=1.0)
    assert listener.queue > 0  # this machine's max_dgram_qlen, read when the socket was made
    assert listener.counts == {"lines": 6, "dropped": 0, "malformed": 0, "refused": 0, "unsent": 0}
    assert listener.turns == 2  # the first datagram at once, the five others after the pause
    assert listener.status()["turns"] == 2
    stamps, paths = stamps_and_paths(mux)
    assert paths == ["/0", "/1", "/2", "/3", "/4", "/5"]
    assert stamps[1:] == [stamps[1]] * 5  # the five read in one turn: one write
    assert stamps[0] != stamps[1]


async def test_a_short_queue_is_read_at_every_wakeup(tmp_path: Path) -> None:
    """With the kernel's default queue (10 datagrams) a pause would let nginx drop lines:
    each datagram is read as it comes, whatever the pause says."""
    listener, mux = await trickle(tmp_path, long_queue=1 << 30, pause=60.0)
    assert listener.turns == 6
    stamps, paths = stamps_and_paths(mux)
    assert paths == ["/0", "/1", "/2", "/3", "/4", "/5"]
    assert len(set(stamps)) == 6  # each flushed on its own, 10 ms after it was read
