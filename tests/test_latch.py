"""supervise/latch.py: a set-once event, as anyio.Event behaves, without its deque."""

import anyio
import pytest

from dokuen.supervise.latch import Latch

pytestmark = pytest.mark.anyio


async def test_every_waiter_wakes_and_later_waits_return_at_once() -> None:
    latch = Latch()
    woken: list[int] = []

    async def waiter(number: int) -> None:
        await latch.wait()
        woken.append(number)

    async with anyio.create_task_group() as tg:
        for number in range(3):
            tg.start_soon(waiter, number)
        await anyio.wait_all_tasks_blocked()
        assert woken == []
        assert not latch.is_set()
        latch.set()
        latch.set()  # a second set changes nothing
    assert sorted(woken) == [0, 1, 2]
    assert latch.is_set()
    with anyio.fail_after(1):
        await latch.wait()


async def test_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    latch = Latch()
    woken: list[str] = []

    async def waiter(name: str) -> None:
        await latch.wait()
        woken.append(name)

    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as doomed:
            tg.start_soon(waiter, "kept")
            await anyio.wait_all_tasks_blocked()
            doomed.cancel()
            await latch.wait()  # cancelled here
        async with anyio.create_task_group() as inner:
            inner.start_soon(waiter, "second")
            await anyio.wait_all_tasks_blocked()
            latch.set()
    assert sorted(woken) == ["kept", "second"]


async def test_waiting_on_a_set_latch_is_still_a_checkpoint() -> None:
    """As anyio.Event's: a task in a cancelled scope is cancelled there, set or not."""
    latch = Latch()
    latch.set()
    reached = False
    with anyio.CancelScope() as scope:
        scope.cancel()
        await latch.wait()
        reached = True
    assert not reached
