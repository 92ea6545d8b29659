"""How a slot ends a process: SIGTERM to its group, SIGKILL after the grace period, then
whatever it left behind; and a process that not even SIGKILL ends, because it sleeps
uninterruptibly in the kernel (state D: a file system or device that does not answer). That
one is *stuck*: after ``KILL_WAIT`` it is reported and left to the kernel, so a stop or a
restart never hangs on it (the kernel ends it once its I/O returns)."""

import signal
from collections.abc import Callable
from typing import Protocol

import anyio
import psutil

from dokuen.supervise import reaper
from dokuen.supervise.clock import Clock
from dokuen.supervise.intake import Outlet

KILL_WAIT = 5.0  # seconds a SIGKILLed process has to be gone before it counts as stuck
GROUP_POLL = 0.02  # seconds between checks for group members that outlive the main process

Say = Callable[..., None]  # (message, event, **fields): the slot's log line and event


class Child(Protocol):
    """A spawned process as a slot sees it: real, or a fake in tests."""

    pid: int

    def outlet(self) -> Outlet | None:
        """Its output's descriptor for the intake to watch; None: read it with ``read``."""

    async def read(self, max_bytes: int) -> bytes:
        """Output bytes; b"" at end of file."""

    async def wait(self) -> int:
        """The exit status: the code, or minus the signal number."""

    def exit_fd(self) -> int | None:
        """A descriptor readable once it exits (its pidfd), to watch while it is idle;
        None: only ``wait`` tells."""

    def signal_group(self, signum: int) -> None:
        """Send a signal to the child's whole process group; no error if it is gone."""

    def group_alive(self) -> bool:
        """After the child itself exited: True while another process of its group runs."""

    def leftovers(self, app: str, dyno: str) -> list[psutil.Process]:
        """Processes that came from this child and left its group (setsid)."""

    async def aclose(self) -> None:
        """Release the output pipe (after the last read, or when a leftover holds it)."""


class Ending:
    """What a slot needs to end one life of its process."""

    def __init__(self, app: str, dyno: str, clock: Clock, say: Say) -> None:
        self.app, self.dyno, self.clock, self.say = app, dyno, clock, say

    async def terminate(self, child: Child, grace: float) -> int | None:
        """Stop a running process: its exit status, or None when it is stuck."""
        deadline = self.clock.now() + grace
        child.signal_group(signal.SIGTERM)
        status = -signal.SIGTERM
        with anyio.move_on_after(grace) as patience:
            status = await child.wait()
        if patience.cancelled_caught:
            child.signal_group(signal.SIGKILL)
            with anyio.move_on_after(KILL_WAIT) as killing:
                status = await child.wait()
            if killing.cancelled_caught:
                return None
            self.say(f"did not stop within {grace:g}s of SIGTERM, sent SIGKILL", "process.killed")
        await self.clean_group(child, max(0.0, deadline - self.clock.now()))
        return status

    async def clean_group(self, child: Child, grace: float) -> None:
        """After the main process exited: SIGTERM what is left of its group, SIGKILL it after
        ``grace``, then kill anything that came from it and left the group."""
        if child.group_alive():
            child.signal_group(signal.SIGTERM)
            with anyio.move_on_after(grace):
                while child.group_alive():
                    await anyio.sleep(GROUP_POLL)
            if child.group_alive():
                child.signal_group(signal.SIGKILL)
                with anyio.move_on_after(KILL_WAIT):
                    while child.group_alive():
                        await anyio.sleep(GROUP_POLL)
                if child.group_alive():
                    self.say(
                        "left processes that even SIGKILL does not end (stuck in "
                        "uninterruptible sleep); left to the kernel",
                        "process.group_stuck",
                    )
        strays = child.leftovers(self.app, self.dyno)
        if strays:
            killed = await anyio.to_thread.run_sync(reaper.kill_all, strays)
            if killed:
                self.say(
                    f"killed {killed} process(es) it left behind outside its group",
                    "process.leftovers_killed",
                    count=killed,
                )
