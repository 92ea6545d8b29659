"""The unified log: table tests for framing, rendering, filtering and tail, then the writer
(LogMux) against a real file: batching, rotation, followers."""

import os
import re
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from dokuen.supervise.logmux import (
    CONTINUED,
    CONTINUES,
    MAX_LINE,
    LineFramer,
    LogFilter,
    LogMux,
    render,
    tail,
)
from dokuen.supervise.logmux import timestamp as stamp_of

C, D = CONTINUES, CONTINUED  # " [line continues]" ends a cut piece, "[continued] " starts the next
SMALL = 8


def frame(chunks: list[bytes], max_line: int = SMALL) -> list[list[bytes]]:
    """The lines each feed returns, then what flush returns."""
    framer = LineFramer(max_line)
    return [framer.feed(chunk) for chunk in chunks] + [framer.flush()]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        pytest.param([b"a\nbc\n"], [[b"a", b"bc"], []], id="lines"),
        pytest.param([b""], [[], []], id="nothing"),
        pytest.param([b"\n"], [[b""], []], id="one-empty-line"),
        pytest.param([b"a\n\n\nb\n"], [[b"a", b"", b"", b"b"], []], id="empty-lines-kept"),
        pytest.param([b"ab", b"c\nd"], [[], [b"abc"], [b"d"]], id="partial-until-newline"),
        pytest.param([b"ab", b"", b"c"], [[], [], [], [b"abc"]], id="flush-returns-partial"),
        pytest.param([b"a\r\n"], [[b"a\r"], []], id="carriage-return-is-data"),
        pytest.param([b"12345678\n"], [[b"12345678"], []], id="max-line-fits"),
        pytest.param([b"1234", b"5678\n"], [[], [b"12345678"], []], id="max-line-fits-in-parts"),
        pytest.param([b"12345678"], [[], [b"12345678"]], id="max-line-partial-fits"),
        pytest.param([b"123456789\n"], [[b"12345678" + C, D + b"9"], []], id="one-over-max-line"),
        pytest.param(
            [b"abcdefghijklmnop\n"],
            [[b"abcdefgh" + C, D + b"ijklmnop"], []],
            id="twice-max-line",
        ),
        pytest.param(
            [b"abcdefghijklmnopqrst\n"],
            [[b"abcdefgh" + C, D + b"ijklmnop" + C, D + b"qrst"], []],
            id="three-pieces",
        ),
        pytest.param(
            [b"a\n123456789\nb\n"],
            [[b"a", b"12345678" + C, D + b"9", b"b"], []],
            id="long-line-between-short-ones",
        ),
        pytest.param(
            [b"12345", b"6789", b"abcdefgh", b"\n"],
            [[], [b"12345678" + C], [D + b"9abcdefg" + C], [D + b"h"], []],
            id="long-partial-emitted-as-it-grows",
        ),
        pytest.param(
            [b"123456789", b"\nnext\n"],
            [[b"12345678" + C], [D + b"9", b"next"], []],
            id="only-the-continued-line-is-marked",
        ),
        pytest.param(
            [b"123456789abc"],
            [[b"12345678" + C], [D + b"9abc"]],
            id="flush-ends-a-continued-line",
        ),
        pytest.param(
            [b"12345678", b"9"],
            [[], [b"12345678" + C], [D + b"9"]],
            id="partial-at-max-line-then-more",
        ),
    ],
)
def test_line_framer(chunks: list[bytes], expected: list[list[bytes]]) -> None:
    assert frame(chunks) == expected


def test_line_framer_pending() -> None:
    framer = LineFramer(SMALL)
    assert not framer.pending
    framer.feed(b"a\nb")
    assert framer.pending
    assert framer.flush() == [b"b"]
    assert not framer.pending
    assert framer.flush() == []


def test_line_framer_default_max_line_is_64_kib() -> None:
    assert MAX_LINE == 64 * 1024
    line = b"x" * MAX_LINE
    assert LineFramer().feed(line + b"\n") == [line]
    assert LineFramer().feed(line + b"y\n") == [line + C, D + b"y"]


STREAMS = [
    b"a\nbb\n\nccc\n",
    b"123456789\nshort\n" + b"x" * 30 + b"\n\n",
    b"".join(bytes([65 + n % 26]) * n + b"\n" for n in range(40)),
    b"tail without newline " * 3,
]


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 17, 1000])
def test_line_framer_chunking_does_not_matter(stream: bytes, size: int) -> None:
    framer = LineFramer(SMALL)
    lines = [line for chunk in chunked(stream, size) for line in framer.feed(chunk)]
    lines += framer.flush()
    at_once = frame([stream])
    assert lines == at_once[0] + at_once[1]


def unframe(pieces: list[bytes]) -> list[bytes]:
    """Join cut pieces back into the lines they came from."""
    lines: list[bytes] = []
    joining = False
    for piece in pieces:
        body = piece.removeprefix(D) if joining else piece
        continues = body.endswith(C)
        body = body.removesuffix(C)
        if joining:
            lines[-1] += body
        else:
            lines.append(body)
        joining = continues
    return lines


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("size", [1, 5, 1000])
def test_line_framer_pieces_are_bounded_and_lossless(stream: bytes, size: int) -> None:
    framer = LineFramer(SMALL)
    pieces = [piece for chunk in chunked(stream, size) for piece in framer.feed(chunk)]
    pieces += framer.flush()
    assert all(len(piece) <= SMALL + len(C) + len(D) for piece in pieces)
    assert all(b"\n" not in piece for piece in pieces)
    assert unframe(pieces) == stream.removesuffix(b"\n").split(b"\n")


@pytest.mark.parametrize(
    ("now", "text"),
    [
        (1795633650.123456, "2026-11-25T19:07:30.123456+00:00"),
        (1795633650.2, "2026-11-25T19:07:30.200000+00:00"),
        (1795633650, "2026-11-25T19:07:30.000000+00:00"),
        (0.0, "1970-01-01T00:00:00.000000+00:00"),
        (951782400.5, "2000-02-29T00:00:00.500000+00:00"),
    ],
)
def test_timestamp(now: float, text: str) -> None:
    assert stamp_of(now) == text


STAMP = "2026-11-25T19:07:30.123456+00:00"


@pytest.mark.parametrize(
    ("app", "source", "lines", "rendered"),
    [
        ("blog", "web.1", [b"hello"], f"{STAMP} blog[web.1]: hello\n".encode()),
        (
            "blog",
            "worker.2",
            [b"a", b"", b"c"],
            (
                f"{STAMP} blog[worker.2]: a\n{STAMP} blog[worker.2]: \n{STAMP} blog[worker.2]: c\n"
            ).encode(),
        ),
        (
            "blog",
            "dokuen",
            [b"web.1 exited with code 1, restarting in 0.5s"],
            f"{STAMP} blog[dokuen]: web.1 exited with code 1, restarting in 0.5s\n".encode(),
        ),
        ("blog", "web.1", [b"caf\xe9"], f"{STAMP} blog[web.1]: ".encode() + b"caf\xe9\n"),
    ],
)
def test_render(app: str, source: str, lines: list[bytes], rendered: bytes) -> None:
    assert render(STAMP, app, source, lines) == rendered


def line(app: str, source: str, message: str = "hello") -> bytes:
    return render(STAMP, app, source, [message.encode()]).rstrip(b"\n")


BLOG_WEB_1 = line("blog", "web.1")
BLOG_WEB_2 = line("blog", "web.2")
BLOG_WEB_10 = line("blog", "web.10")
BLOG_WORKER = line("blog", "worker.1")
BLOG_WEBHOOK = line("blog", "webhook.1")
BLOG_DAEMON = line("blog", "dokuen", "web.1 exited with code 1, restarting in 0.5s")
BLOGGER_WEB = line("blogger", "web.1")
SHOP_WEB = line("shop", "web.1")
SHOP_FAKE = line("shop", "web.1", "blog[web.1]: not blog's line")
ALL = [
    BLOG_WEB_1,
    BLOG_WEB_2,
    BLOG_WEB_10,
    BLOG_WORKER,
    BLOG_WEBHOOK,
    BLOG_DAEMON,
    BLOGGER_WEB,
    SHOP_WEB,
    SHOP_FAKE,
]


@pytest.mark.parametrize(
    ("wanted", "kept"),
    [
        pytest.param(LogFilter(), ALL, id="everything"),
        pytest.param(
            LogFilter("blog"),
            [BLOG_WEB_1, BLOG_WEB_2, BLOG_WEB_10, BLOG_WORKER, BLOG_WEBHOOK, BLOG_DAEMON],
            id="app-includes-daemon-lines",
        ),
        pytest.param(LogFilter("shop"), [SHOP_WEB, SHOP_FAKE], id="app-not-message"),
        pytest.param(LogFilter("nosuch"), [], id="unknown-app"),
        pytest.param(LogFilter("blog", "web"), [BLOG_WEB_1, BLOG_WEB_2, BLOG_WEB_10], id="type"),
        pytest.param(LogFilter("blog", "web", 1), [BLOG_WEB_1], id="type-and-index"),
        pytest.param(LogFilter("blog", "web", 10), [BLOG_WEB_10], id="two-digit-index"),
        pytest.param(LogFilter("blog", "web", 3), [], id="index-not-running"),
        pytest.param(LogFilter("blog", "worker"), [BLOG_WORKER], id="other-type"),
        pytest.param(
            LogFilter(None, "web", 1),
            [BLOG_WEB_1, BLOGGER_WEB, SHOP_WEB, SHOP_FAKE],
            id="process-in-every-app",
        ),
    ],
)
def test_log_filter(wanted: LogFilter, kept: list[bytes]) -> None:
    assert [line for line in ALL if wanted.matches(line)] == kept
    batch = b"".join(line + b"\n" for line in ALL)
    assert wanted.select(batch) == b"".join(line + b"\n" for line in kept)


BLOG_ROUTER = line("blog", "router", 'at=info method=GET path="/" dyno=web.1 status=200')
SHOP_ROUTER = line("shop", "router", 'at=info method=GET path="/x[dokuen]: " status=200')
BLOG_ROUTER_TYPE = line("blog", "router.1", "a process type named router is the app's")
SOURCED = [BLOG_WEB_1, BLOG_DAEMON, BLOG_ROUTER, SHOP_WEB, SHOP_ROUTER, BLOG_ROUTER_TYPE]


@pytest.mark.parametrize(
    ("wanted", "kept"),
    [
        pytest.param(LogFilter(source="app"), [BLOG_WEB_1, SHOP_WEB, BLOG_ROUTER_TYPE], id="app"),
        pytest.param(LogFilter(source="dokuen"), [BLOG_DAEMON], id="dokuen"),
        pytest.param(LogFilter(source="router"), [BLOG_ROUTER, SHOP_ROUTER], id="router"),
        pytest.param(LogFilter("blog", source="router"), [BLOG_ROUTER], id="app-and-router"),
        pytest.param(LogFilter("blog", "web", source="app"), [BLOG_WEB_1], id="ps-and-app"),
        pytest.param(LogFilter("blog", "web", source="router"), [], id="ps-and-router"),
        pytest.param(LogFilter(source="nosuch"), [], id="unknown-source"),
    ],
)
def test_log_filter_by_source(wanted: LogFilter, kept: list[bytes]) -> None:
    assert not wanted.everything
    assert [line for line in SOURCED if wanted.matches(line)] == kept
    batch = b"".join(line + b"\n" for line in SOURCED)
    assert wanted.select(batch) == b"".join(line + b"\n" for line in kept)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"no-space-here", b"stamp but no brackets", b"stamp app[web.1 no close", b"x y]: z["],
)
def test_log_filter_refuses_lines_that_are_not_log_lines(garbage: bytes) -> None:
    assert not LogFilter("blog").matches(garbage)
    assert not LogFilter(None, "web").matches(garbage)


def test_log_filter_select_empty_batch() -> None:
    assert LogFilter("blog").select(b"") == b""
    assert LogFilter().select(b"") == b""


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A unified log of 50 lines alternating blog[web.1] and shop[web.1]: (fd, size)."""
    path = tmp_path / "dokuen.log"
    path.write_bytes(
        b"".join(
            render(STAMP, "blog" if n % 2 == 0 else "shop", "web.1", [f"line {n}".encode()])
            for n in range(50)
        )
    )
    fd = os.open(path, os.O_RDONLY)
    yield fd, path.stat().st_size
    os.close(fd)


def messages(text: bytes) -> list[str]:
    return [line.split(b"]: ", 1)[1].decode() for line in text.splitlines()]


@pytest.mark.parametrize("block", [1 << 16, 200, 97, 10, 1])
@pytest.mark.parametrize(
    ("count", "wanted", "expected"),
    [
        pytest.param(3, LogFilter(), [47, 48, 49], id="last-3"),
        pytest.param(1, LogFilter(), [49], id="last-1"),
        pytest.param(0, LogFilter(), [], id="count-0"),
        pytest.param(3, LogFilter("blog"), [44, 46, 48], id="last-3-matching"),
        pytest.param(2, LogFilter("shop", "web", 1), [47, 49], id="last-2-of-a-process"),
        pytest.param(100, LogFilter(), list(range(50)), id="more-than-there-are"),
        pytest.param(100, LogFilter("blog"), list(range(0, 50, 2)), id="all-matching"),
        pytest.param(5, LogFilter("nosuch"), [], id="none-matching"),
    ],
)
def test_tail(
    log_file: tuple[int, int], block: int, count: int, wanted: LogFilter, expected: list[int]
) -> None:
    fd, size = log_file
    result = tail(fd, size, count, wanted, block=block)
    assert messages(result) == [f"line {n}" for n in expected]
    assert result == b"" or result.endswith(b"\n")


def test_tail_stops_at_end(log_file: tuple[int, int]) -> None:
    fd, size = log_file
    whole = os.pread(fd, size, 0)
    end = whole.index(b"line 10\n") + len(b"line 10\n")
    assert messages(tail(fd, end, 2, LogFilter(), block=64)) == ["line 9", "line 10"]
    assert tail(fd, 0, 5, LogFilter()) == b""


def test_tail_of_a_file_bigger_than_the_default_block(tmp_path: Path) -> None:
    path = tmp_path / "dokuen.log"
    lines = [
        render(STAMP, "blog", "web.1", [f"{n:05} ".encode() + b"x" * 200]) for n in range(2000)
    ]
    path.write_bytes(b"".join(lines))
    assert path.stat().st_size > 4 * (1 << 16)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert tail(fd, path.stat().st_size, 1500, LogFilter("blog")) == b"".join(lines[-1500:])
    finally:
        os.close(fd)


# -- the writer ---------------------------------------------------------------------------


def fixed_clock() -> float:
    return 1_795_000_000.0


@pytest.mark.anyio
async def test_writer_appends_in_order_and_flushes_on_cancel(tmp_path: Path) -> None:
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 30, keep=2, clock=fixed_clock)
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        for i in range(1000):
            mux.write("blog", "web.1", [f"line {i}".encode()])
        mux.event("blog", "web.1 exited with code 1, restarting in 0.1s")
        tg.cancel_scope.cancel()  # pending lines still land
    lines = (tmp_path / "dokuen.log").read_text().splitlines()
    assert len(lines) == 1001
    assert lines[0] == f"{stamp_of(fixed_clock())} blog[web.1]: line 0"
    assert lines[999].endswith("blog[web.1]: line 999")
    assert lines[1000].endswith("blog[dokuen]: web.1 exited with code 1, restarting in 0.1s")


@pytest.mark.anyio
async def test_writer_rotates_by_size_and_keeps_n_files(tmp_path: Path) -> None:
    path = tmp_path / "dokuen.log"
    mux = LogMux(path, max_bytes=1000, keep=2, clock=fixed_clock, high_water=0)
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        for i in range(60):
            mux.write("blog", "web.1", [f"{i:04d}".encode() + b"x" * 40])
            await mux.backpressure()  # the writer takes each line as a batch of its own
        tg.cancel_scope.cancel()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dokuen.log",
        "dokuen.log.1",
        "dokuen.log.2",
    ]
    kept = [
        line
        for name in ("dokuen.log.2", "dokuen.log.1", "dokuen.log")
        for line in (tmp_path / name).read_text().splitlines()
    ]
    numbers = [int(line.split(": ")[1][:4]) for line in kept]
    assert numbers == list(range(numbers[0], 60))
    assert numbers[0] > 0  # the oldest file was deleted
    assert (tmp_path / "dokuen.log.1").stat().st_size >= 1000


@pytest.mark.anyio
async def test_follow_sees_every_line_once_across_file_and_backlog(tmp_path: Path) -> None:
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 30, keep=1)
    everything = LogFilter()
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        for i in range(500):
            mux.write("blog", "web.1", [f"{i}".encode()])
        await anyio.sleep(0)  # some of it written, some of it still pending
        follower, fd, end = mux.follow(everything, 10_000)
        for i in range(500, 1000):
            mux.write("blog", "web.1", [f"{i}".encode()])
        older = tail(fd, end, 10_000, everything)
        os.close(fd)
        seen = (older + follower.backlog).decode().splitlines()
        async for batch in follower:
            seen += batch.decode().splitlines()
            if seen[-1].endswith(": 999"):
                break
        mux.unfollow(follower)
        tg.cancel_scope.cancel()
    assert [int(line.rsplit(" ", 1)[1]) for line in seen] == list(range(1000))


@pytest.mark.anyio
async def test_a_follower_that_does_not_read_is_dropped_not_waited_for(tmp_path: Path) -> None:
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 30, keep=1, follower_limit=10_000)
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        stuck, fd, _end = mux.follow(LogFilter(), 0)
        os.close(fd)
        for i in range(2000):
            mux.write("blog", "web.1", [f"line {i} ".encode() + b"y" * 50])
            await anyio.sleep(0)
        with anyio.fail_after(5):
            while "line 1999 " not in (tmp_path / "dokuen.log").read_text():
                await anyio.sleep(0.01)
        assert stuck.dropped
        received = [batch async for batch in stuck]  # what it had queued, then the end
        assert 0 < sum(len(b) for b in received) <= 10_000
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_filtered_follower_gets_only_its_lines(tmp_path: Path) -> None:
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 30, keep=1)
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        follower, fd, _end = mux.follow(LogFilter("blog", "worker", None), 0)
        os.close(fd)
        mux.write("blog", "web.1", [b"no"])
        mux.write("shop", "worker.1", [b"no"])
        mux.write("blog", "worker.2", [b"yes"])
        with anyio.fail_after(5):
            batch = await follower.__anext__()
        assert batch.decode().endswith(" blog[worker.2]: yes\n")
        mux.unfollow(follower)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_one_big_batch_rotates_at_the_first_line_end_past_the_size(tmp_path: Path) -> None:
    path = tmp_path / "dokuen.log"
    mux = LogMux(path, max_bytes=1000, keep=3, clock=fixed_clock)
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        mux.write("blog", "web.1", [f"{i:04d}".encode() + b"x" * 40 for i in range(60)])
        tg.cancel_scope.cancel()  # the writer takes all sixty lines as one batch
    line = len(f"{stamp_of(fixed_clock())} blog[web.1]: 0000".encode()) + 40 + 1
    for name in ("dokuen.log.1", "dokuen.log.2", "dokuen.log.3"):
        size = (tmp_path / name).stat().st_size
        assert 1000 <= size < 1000 + line
        assert size % line == 0  # whole lines only


@pytest.mark.anyio
async def test_a_log_that_cannot_be_written_loses_lines_not_the_daemon() -> None:
    mux = LogMux(Path("/dev/full"), max_bytes=1 << 30, keep=1)  # every write: ENOSPC
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        follower, fd, _end = mux.follow(LogFilter(), 0)
        os.close(fd)
        mux.write("blog", "web.1", [b"still flowing"])
        with anyio.fail_after(5):
            batch = await follower.__anext__()
        assert batch.endswith(b" blog[web.1]: still flowing\n")
        assert mux.lost == len(batch)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_write_cut_short_leaves_no_piece_of_a_line_and_the_gap_is_said_once(
    tmp_path: Path,
) -> None:
    """A write the file system takes only part of (here RLIMIT_FSIZE: the writev stops at
    the limit, then EFBIG) is cut back to the last whole batch; the lines are counted while
    writes fail, and said in one line once a write works again."""
    path = tmp_path / "dokuen.log"
    mux = LogMux(path, max_bytes=1 << 30, keep=1, clock=fixed_clock)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    ignored = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the limit kills us
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(mux.run)
            # 2 MiB first: the limit must stay above whatever else this process writes
            # meanwhile (pytest's capture of the error this logs).
            mux.write("blog", "web.1", [b"first" + b"x" * 1000] * 2048)
            await mux.drained()
            first = path.read_bytes()
            resource.setrlimit(resource.RLIMIT_FSIZE, (len(first) + 100, hard))
            for n in range(3):  # three batches, each failing: the first one part-way
                mux.write("blog", "web.1", [b"%d" % n + b"y" * 60 for _ in range(5)])
                await mux.drained()
            assert path.read_bytes() == first
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            mux.write("blog", "web.1", [b"after"])
            await mux.drained()
            await mux.drained()  # and the line about the gap, queued once "after" was in
            tg.cancel_scope.cancel()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, ignored)
    lines = path.read_bytes().decode().splitlines()
    stamp = stamp_of(fixed_clock())
    assert lines[:2048] == [f"{stamp} blog[web.1]: first{'x' * 1000}"] * 2048
    assert lines[2048] == f"{stamp} blog[web.1]: after"
    assert len(lines) == 2050
    assert re.fullmatch(
        rf"{re.escape(stamp)} dokuen\[dokuen\]: 15 lines \(1\.\d KiB\) could not be written "
        rf"to this log from {re.escape(stamp)} to {re.escape(stamp)}: File too large",
        lines[2049],
    ), lines[2049]
    assert mux.lost == 15 * len(f"{stamp} blog[web.1]: 0{'y' * 60}\n")


@pytest.mark.anyio
async def test_a_rotation_whose_new_file_cannot_be_made_renames_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The new file is made before anything is renamed: when it cannot be (here a
    directory is in its way), every older file keeps its name and its lines, the current
    one goes on, and the failure is said once, not at every batch."""
    path = tmp_path / "dokuen.log"
    (tmp_path / "dokuen.log.1").write_bytes(b"older\n")
    (tmp_path / "dokuen.log.new").mkdir()
    mux = LogMux(path, max_bytes=100, keep=3, clock=fixed_clock)
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        for n in range(5):  # each batch past the size: a rotation tried each time
            mux.write("blog", "web.1", [b"line %d" % n + b"x" * 100])
            await mux.drained()
        tg.cancel_scope.cancel()
    assert (tmp_path / "dokuen.log.1").read_bytes() == b"older\n"
    assert not (tmp_path / "dokuen.log.2").exists()
    assert path.read_bytes().count(b"\n") == 5
    assert capsys.readouterr().err.count("log.rotate_failed") == 1
