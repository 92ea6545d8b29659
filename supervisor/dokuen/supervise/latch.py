"""A latch: set once, waited for by any number of tasks; ``anyio.Event``'s contract.

Every process slot holds a few for its whole life (its end, its first health check, its
pipe's end of file). On asyncio an ``anyio.Event`` is an ``asyncio.Event`` whose waiters'
deque takes 624 bytes before anyone waits; a latch keeps nothing until a task waits on it,
which is what one idle child costs the daemon (docs/benchmarks.md, workload 3).
"""

import asyncio

import anyio.lowlevel


class Latch:
    """Unset until :meth:`set`; then :meth:`wait` returns at once, for good. Used on the
    event loop's thread only."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Wake every task that waits, and every one that will."""
        if self._set:
            return
        self._set = True
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)
        self._waiters = None

    async def wait(self) -> None:
        """Return once the latch is set (at a checkpoint, like anyio's, when it already is)."""
        if self._set:
            await anyio.lowlevel.checkpoint()
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
