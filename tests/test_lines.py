"""The fast log path against the plain one: ``feed_block`` and ``render_block`` give byte for
byte what ``feed`` and ``render`` give, the cheap timestamp equals datetime's, and the writer's
``cut_batch`` and ``writev`` loop lose, reorder and split nothing."""

import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dokuen.supervise.lines import (
    LineFramer,
    last_lines,
    render,
    render_block,
    render_parts,
    timestamp,
)
from dokuen.supervise.logfile import IOV_MAX, WRITE_SIZE, cut_batch, write_all

SMALL = 16


def streams() -> Iterator[bytes]:
    rng = random.Random(17)
    yield b"a\nbb\n\nccc\n"
    yield b"x" * 40 + b"\n" + b"y" * 15 + b"\n" + b"z" * 16 + b"\nend"
    yield b"".join(bytes([65 + n % 26]) * n + b"\n" for n in range(60))
    for _ in range(30):  # random runs around the limit, some of them with no newline at all
        parts = [b"q" * rng.choice([0, 1, 7, 15, 16, 17, 31, 32, 33, 70]) for _ in range(25)]
        yield b"".join(part + rng.choice([b"\n", b"\n", b""]) for part in parts)


@pytest.mark.parametrize("stream", list(streams()))
@pytest.mark.parametrize("size", [1, 3, 16, 17, 40, 1000])
def test_feed_block_gives_what_feed_gives(stream: bytes, size: int) -> None:
    plain, fast = LineFramer(SMALL), LineFramer(SMALL)
    lines: list[bytes] = []
    blocks = b""
    for start in range(0, len(stream), size):
        chunk = stream[start : start + size]
        lines += plain.feed(chunk)
        block = fast.feed_block(chunk)
        assert block == b"" or block.endswith(b"\n")
        blocks += block
        assert fast.pending == plain.pending
    assert blocks == b"".join(line + b"\n" for line in lines)
    assert fast.flush() == plain.flush()


def test_feed_block_cuts_a_long_line_at_the_default_size() -> None:
    framer, plain = LineFramer(), LineFramer()
    stream = b"short\n" + b"L" * (200 * 1024) + b"\n" + b"s" * 100 + b"\n"
    block = b"".join(framer.feed_block(stream[i : i + 65536]) for i in range(0, len(stream), 65536))
    lines = [
        line for i in range(0, len(stream), 65536) for line in plain.feed(stream[i : i + 65536])
    ]
    assert block == b"".join(line + b"\n" for line in lines)
    assert max(len(line) for line in block.split(b"\n")) <= 65536 + 32


@pytest.mark.parametrize("block", [b"one\n", b"a\nbb\n\n", b"\n", b"x y z\n" * 50])
def test_render_block_renders_as_render_does(block: bytes) -> None:
    stamp = "2026-11-25T19:07:30.123456+00:00"
    lines = block.split(b"\n")[:-1]
    assert render_block(stamp, "web", "web.1", block) == render(stamp, "web", "web.1", lines)


@pytest.mark.parametrize(
    "block",
    [b"one\n", b"a\nb\n", b"x\n" * 2000, b"L" * 5000 + b"\n", b"y\n" * 3 + b"L" * 5000 + b"\n"]
    + [b"".join(b"n%d %s\n" % (n, b"x" * size) for n in range(40)) for size in (10, 150, 250)],
)
def test_last_lines_are_the_last_lines(block: bytes) -> None:
    for count in (1, 10):
        assert last_lines(block, count) == block.split(b"\n")[:-1][-count:]


@pytest.mark.parametrize("block", [b"one\n", b"a\nbb\n\n", b"\n", b"x y z\n" * 50])
def test_render_parts_are_render_block_in_two(block: bytes) -> None:
    stamp = "2026-11-25T19:07:30.123456+00:00"
    prefix, body = render_parts(stamp, "web", "web.1", block)
    assert prefix == f"{stamp} web[web.1]: ".encode()
    assert prefix + bytes(body) == render(stamp, "web", "web.1", block.split(b"\n")[:-1])


def test_timestamp_equals_datetime_rounding() -> None:
    rng = random.Random(3)
    values = [rng.uniform(0, 4e9) for _ in range(20000)]
    values += [n + f for n in (0, 1795633650, 2**31) for f in (0.0, 5e-7, 4.999999e-7, 0.9999995)]
    for now in values:
        assert timestamp(now) == datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds")


def test_cut_batch_cuts_at_the_first_line_end_past_the_room() -> None:
    batch = [b"aa\nbb\n", b"cc\n", b"dddd\neeee\n"]
    whole = b"".join(batch)
    for room in range(-2, len(whole) + 3):
        head, rest = cut_batch(batch, room)
        joined = b"".join(head)
        assert joined + b"".join(rest) == whole
        old_cut = len(whole) if len(whole) <= room else whole.find(b"\n", max(room - 1, 0)) + 1
        assert joined == whole[:old_cut], room


def test_cut_batch_cuts_only_at_a_line_end_with_prefixes_and_views() -> None:
    stamp = "2026-11-25T19:07:30.123456+00:00"
    batch: list[bytes | memoryview] = []
    for n in range(5):
        batch += render_parts(stamp, "web", f"web.{n}", b"one\ntwo\n" * (n + 1))
    whole = b"".join(batch)
    for room in range(-2, len(whole) + 3):
        head, rest = cut_batch(batch, room)
        joined = b"".join(head)
        assert joined + b"".join(rest) == whole
        cut = len(whole) if len(whole) <= room else whole.find(b"\n", max(room - 1, 0)) + 1
        assert joined == whole[:cut], room


def test_write_all_writes_every_part_in_order(tmp_path: Path) -> None:
    rng = random.Random(5)
    parts = [bytes([48 + n % 10]) * rng.choice([1, 100, 5000]) + b"\n" for n in range(1100)]
    parts.insert(5, b"")
    assert len(parts) > IOV_MAX
    assert sum(map(len, parts)) > WRITE_SIZE
    fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        write_all(fd, parts)
    finally:
        os.close(fd)
    assert (tmp_path / "log").read_bytes() == b"".join(parts)
