"""Waiting until a file descriptor can be read or written, on the running asyncio loop.

anyio's ``wait_readable`` lives in the module that also makes TCP and TLS connections and
imports ``ssl`` at its top, which links libssl and libcrypto: 4 MiB resident for the
daemon's whole life, to wait on pipes and pidfds (docs/benchmarks.md, workload 3). These two
do what anyio's asyncio backend does with ``add_reader``/``add_writer``; a cancel scope
cancels them as it cancels any await.
"""

import asyncio
from collections.abc import Callable

# The descriptors a task waits on, by direction (False: to read, True: to write): asyncio
# keeps one callback per descriptor and direction, so a second waiter would silently take
# the first one's place. Sets of numbers, not of pairs: a parked slot's pidfd is in one.
_waiting: dict[bool, set[int]] = {False: set(), True: set()}


async def wait_readable(fd: int) -> None:
    """Return once ``fd`` has something to read (or its writers are gone).

    Raises:
        RuntimeError: another task already waits for ``fd`` to be readable.
    """
    await _wait(fd, writable=False)


async def wait_writable(fd: int) -> None:
    """Return once ``fd`` can take a write (or its reader is gone).

    Raises:
        RuntimeError: another task already waits for ``fd`` to be writable.
    """
    await _wait(fd, writable=True)


def watch_readable(fd: int, callback: Callable[[], None]) -> None:
    """Call ``callback`` (on the loop) each time ``fd`` is readable, until :func:`unwatch`:
    what an idle process slot waits with, instead of a task (process.py, parking).

    Raises:
        RuntimeError: a task or a callback already waits for ``fd`` to be readable.
    """
    _watch(fd, callback, writable=False)


def unwatch(fd: int) -> None:
    """No more calls for ``fd`` (see :func:`watch_readable`)."""
    _unwatch(fd, writable=False)


def _watch(fd: int, callback: Callable[[], None], *, writable: bool) -> None:
    if fd in _waiting[writable]:
        raise RuntimeError(f"another task already waits on file descriptor {fd}")
    loop = asyncio.get_running_loop()
    (loop.add_writer if writable else loop.add_reader)(fd, callback)
    _waiting[writable].add(fd)


def _unwatch(fd: int, *, writable: bool) -> None:
    _waiting[writable].discard(fd)
    loop = asyncio.get_running_loop()
    (loop.remove_writer if writable else loop.remove_reader)(fd)


async def _wait(fd: int, *, writable: bool) -> None:
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    _watch(fd, wake, writable=writable)
    try:
        await ready
    finally:
        _unwatch(fd, writable=writable)
