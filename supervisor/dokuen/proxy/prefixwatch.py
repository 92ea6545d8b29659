"""When nginx/ loses a part, so that dokuend makes it again (it is derived data): told by the
kernel (inotify: a name removed or renamed away in nginx/, or nginx/ itself), so an idle
daemon never wakes for it. Where there is no inotify (not Linux), a look every SETTLE
seconds.
"""

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from dokuen.proxy.holes import watch
from dokuen.supervise.readiness import wait_readable

SETTLE = 2.0  # seconds from the first sign to the look: an `rm -rf nginx` under way ends first
# IN_DELETE, IN_MOVED_FROM (a name in nginx/ gone), IN_DELETE_SELF, IN_MOVE_SELF (nginx/
# gone); IN_ONLYDIR, IN_DONT_FOLLOW: a link put at nginx/ is not watched through (then looks)
GONE = 0x200 | 0x40 | 0x400 | 0x800 | 0x01000000 | 0x02000000


async def keep_whole(prefix: Path, heal: Callable[[], Awaitable[bool]]) -> None:
    """Call ``heal`` now, then SETTLE seconds after each loss in ``prefix``, and every
    SETTLE seconds while it returns False (nginx/ not whole: a full disk, say) or there
    is no inotify. Returns only when cancelled."""
    while True:
        notify = watch(prefix, mask=GONE)  # before the look: a loss after it is seen
        try:
            if await heal() and notify >= 0:
                await wait_readable(notify)
        finally:
            if notify >= 0:
                os.close(notify)
        await anyio.sleep(SETTLE)
