"""What a process slot is given by its app (``SlotConfig``), the states it goes through,
and how it words an exit: the slot's vocabulary, apart from its life (process.py)."""

import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from dokuen.isolate.cgroups import Group
from dokuen.supervise.ending import Child
from dokuen.supervise.formation import ProcessSpec
from dokuen.supervise.health import HealthCheck
from dokuen.supervise.restart import RestartPolicy

STUCK = (
    "is stuck in uninterruptible sleep (state D): SIGKILL did not end it, so it is left to "
    "the kernel (a file system or device it waits on does not answer: check dmesg)"
)


class ProcessState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    CRASHED = "crashed"
    STOPPING = "stopping"
    STOPPED = "stopped"
    STUCK = "stuck"  # SIGKILL did not end it (uninterruptible sleep): left to the kernel


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


@dataclass(frozen=True, slots=True)
class SlotConfig:
    """What a slot needs from its app, fixed for the slot's lifetime."""

    spec: ProcessSpec
    cwd: Path
    environment: Callable[[int], dict[str, str]]  # port -> the process's environment
    stop_timeout: float
    policy: RestartPolicy
    health: HealthCheck | None = None  # web behind nginx: must pass before it is RUNNING
    user: int | None = None  # the uid it runs as (gid the same number); None: dokuend's
    cgroup: Callable[[], Group] | None = None  # a new cgroup for each life, where there are
    release: str = ""  # the release it runs (vN), so a switch tells old slots from new
