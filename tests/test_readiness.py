"""supervise/readiness.py: waiting on a descriptor without anyio's sockets module."""

import os
from collections.abc import Iterator

import anyio
import pytest

from dokuen.supervise.readiness import wait_readable, wait_writable

pytestmark = pytest.mark.anyio


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    reader, writer = os.pipe2(os.O_NONBLOCK)
    yield reader, writer
    os.close(reader)
    os.close(writer)


async def test_readable_once_written_and_writable_until_full(pipe: tuple[int, int]) -> None:
    reader, writer = pipe
    with anyio.move_on_after(0.05) as waited:
        await wait_readable(reader)
    assert waited.cancelled_caught  # nothing written yet: still waiting
    os.write(writer, b"x")
    with anyio.fail_after(2):
        await wait_readable(reader)
        await wait_writable(writer)
    filled = 0
    try:
        while True:
            filled += os.write(writer, b"y" * 65536)
    except BlockingIOError:
        pass
    assert filled > 0
    with anyio.move_on_after(0.05) as full:
        await wait_writable(writer)
    assert full.cancelled_caught


async def test_a_second_waiter_on_one_descriptor_is_refused(pipe: tuple[int, int]) -> None:
    """asyncio keeps one callback per descriptor: a second waiter would silently take the
    first one's place and leave it waiting for ever."""
    reader, writer = pipe
    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_readable, reader)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match=f"file descriptor {reader}"):
            await wait_readable(reader)
        os.write(writer, b"x")  # the first waiter is still woken
    # and once it is done, the descriptor may be waited on again
    with anyio.fail_after(2):
        await wait_readable(reader)
