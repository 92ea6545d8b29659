"""A supervised process as a slot sees it (``Child``), what starts one (``Spawner``) and how
its end is said (``describe_exit``): real (spawn.py, keeper.py) or fakes in tests."""

import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import psutil

from dokuen.isolate.cgroups import Group


class Child(Protocol):
    """A spawned process as a slot sees it: real, or a fake in tests."""

    pid: int

    async def read(self, max_bytes: int) -> bytes:
        """Output bytes; b"" at end of file."""

    async def wait(self) -> int:
        """The exit status: the code, or minus the signal number."""

    def signal_group(self, signum: int) -> None:
        """Send a signal to the child's whole process group; no error if it is gone."""

    def group_alive(self) -> bool:
        """After the child itself exited: True while another process of its group runs."""

    def leftovers(self, app: str, dyno: str) -> list[psutil.Process]:
        """Processes that came from this child and left its group (setsid)."""

    async def aclose(self) -> None:
        """Release the output pipe (after the last read, or when a leftover holds it)."""


class Spawner(Protocol):
    async def __call__(
        self,
        command: str,
        env: Mapping[str, str],
        cwd: Path,
        *,
        user: int | None = None,
        cgroup: Group | None = None,
    ) -> Child: ...


def describe_exit(status: int) -> str:
    """``exited with code 1`` or ``killed by SIGKILL``."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"killed by {name}"
    return f"exited with code {status}"
