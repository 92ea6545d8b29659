"""Where an app's idle process slots wait with no task of their own.

A slot whose process runs, whose output the intake reads by callbacks and that has no
health check under way has nothing to do until the process exits or the slot is stopped.
Rather than hold a task (about 5 KiB each on asyncio with anyio's task handles, cancel
scopes and the coroutine frames under ``wait``: docs/benchmarks.md, workload 3), it
*parks*: the process's pidfd is watched by a callback (readiness.watch_readable), which
starts the slot's next phase as a task in the app's group when the process exits; a stop
starts it too, already cancelled. When the app's group ends (a shutdown), ``close`` wakes
every parked slot the same way, so each one's process is stopped as a task's would be.
"""

from collections.abc import Callable

import anyio.abc

from dokuen.supervise.readiness import unwatch, watch_readable


class Parking:
    """The app's task group, and the wake-up calls of the slots parked in it."""

    __slots__ = ("closed", "parked", "tasks")

    def __init__(self, tasks: anyio.abc.TaskGroup) -> None:
        self.tasks = tasks
        self.closed = False  # the group ends: nothing parks any more
        self.parked: set[Callable[[], None]] = set()

    def park(self, pidfd: int, wake: Callable[[], None]) -> bool:
        """Call ``wake`` once ``pidfd`` is readable (its process exited) or at ``close``;
        False (nothing done) when the group is ending."""
        if self.closed:
            return False
        watch_readable(pidfd, wake)
        self.parked.add(wake)
        return True

    def unpark(self, pidfd: int, wake: Callable[[], None]) -> None:
        """``wake`` is being called: no more calls for ``pidfd``."""
        unwatch(pidfd)
        self.parked.discard(wake)

    def close(self) -> None:
        """The group ends: every parked slot becomes a task again (which the group's
        cancellation then stops, as it stops every other), and none parks again."""
        self.closed = True
        for wake in list(self.parked):
            wake()
