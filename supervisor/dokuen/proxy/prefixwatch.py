"""When nginx/ loses a part, so that dokuend makes it again (it is derived data): told by the
kernel (inotify: a name removed or renamed away in nginx/, or nginx/ itself; and a change of
the mount table, since a file system mounted over nginx/ or the home hides it without a word
to a watch on the directory underneath), so an idle daemon never wakes for it. Where there
is no inotify (not Linux), a look every SETTLE seconds.
"""

import contextlib
import os
import select
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from dokuen.proxy.holes import watch
from dokuen.supervise.readiness import wait_readable

SETTLE = 2.0  # seconds from the first sign to the look: an `rm -rf nginx` under way ends first
# IN_DELETE, IN_MOVED_FROM (a name in nginx/ gone), IN_DELETE_SELF, IN_MOVE_SELF (nginx/
# gone); IN_ONLYDIR, IN_DONT_FOLLOW: a link put at nginx/ is not watched through (then looks)
GONE = 0x200 | 0x40 | 0x400 | 0x800 | 0x01000000 | 0x02000000
# Polled, the mount table says EPOLLIN always and EPOLLPRI once after each change.
MOUNTS = "/proc/self/mountinfo"


async def keep_whole(prefix: Path, heal: Callable[[], Awaitable[bool]]) -> None:
    """Call ``heal`` now, then SETTLE seconds after each loss in ``prefix`` (or change of
    the mounts), and every SETTLE seconds while it returns False (nginx/ not whole: a full
    disk, say) or there is no inotify. Returns only when cancelled."""
    while True:
        with contextlib.ExitStack() as signs:
            sign = _signs(prefix, signs)  # before the look: a loss after it is seen
            if await heal() and sign >= 0:
                await wait_readable(sign)
        await anyio.sleep(SETTLE)


def _signs(prefix: Path, stack: contextlib.ExitStack) -> int:
    """A descriptor readable at a loss in ``prefix`` or a change of the mount table (closed
    with ``stack``); only the loss where the mounts cannot be watched; -1: no watch."""
    notify = watch(prefix, mask=GONE)
    if notify < 0:
        return -1
    stack.callback(os.close, notify)
    try:  # no descriptor left (EMFILE), no /proc: the loss alone
        mounts = os.open(MOUNTS, os.O_RDONLY | os.O_CLOEXEC)
        stack.callback(os.close, mounts)
        either = stack.enter_context(select.epoll())
        either.register(notify, select.EPOLLIN)
        either.register(mounts, select.EPOLLPRI)
    except OSError:
        return notify
    return either.fileno()
