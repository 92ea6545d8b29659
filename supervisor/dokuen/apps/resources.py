"""An app's cgroup: its limits (``DOKUEN_MEMORY_LIMIT``, ``DOKUEN_PROCESS_LIMIT``) applied to
the app's group, a new group below it for each life of each of its processes, and what
``ps`` shows of their use."""

import contextlib
from collections.abc import Callable
from typing import Any

from dokuen.apps.options import AppOptions
from dokuen.isolate.cgroups import Cgroups, Group, measure
from dokuen.isolate.limits import show_size
from dokuen.supervise.process import ProcessSlot


def apply_limits(
    cgroups: Cgroups | None, app: str, options: AppOptions, default_processes: int | None
) -> list[str]:
    """Write the app's limits into its group (made now if need be), ``default_processes``
    (DOKUEN_APP_PROCESSES) where it sets no DOKUEN_PROCESS_LIMIT; return what could not be
    applied of what the app set, each a sentence for the app's log."""
    wanted = {
        "memory": ("DOKUEN_MEMORY_LIMIT", options.memory_limit),
        "pids": ("DOKUEN_PROCESS_LIMIT", options.process_limit),
    }
    set_ = [(controller, key) for controller, (key, value) in wanted.items() if value is not None]
    if cgroups is None:
        return [f"{key} is not applied: cgroups are off (see dokuenctl status)" for _c, key in set_]
    problems = [
        f"{key} is not applied: this machine's cgroups have no {controller} controller"
        for controller, key in set_
        if controller not in cgroups.layout.controllers
    ]
    group = cgroups.app(app)
    try:
        group.create()
    except OSError as exc:
        return [*problems, f"cannot make the app's cgroup {group.name}: {exc}"]
    processes = options.process_limit or default_processes
    problems += group.set_limits(options.memory_limit, processes)
    return problems


def describe_limits(options: AppOptions) -> str:
    """``memory 512M, 64 processes``, or "" without limits."""
    parts = []
    if options.memory_limit is not None:
        parts.append(f"memory {show_size(options.memory_limit)}")
    if options.process_limit is not None:
        parts.append(f"{options.process_limit} processes")
    return ", ".join(parts)


class Placement:
    """Gives each life of one process a new group of its own (one object a process, where
    a partial of a bound method is four: docs/benchmarks.md, workload 3)."""

    __slots__ = ("app", "cgroups", "name")

    def __init__(self, cgroups: Cgroups, app: str, name: str) -> None:
        self.cgroups, self.app, self.name = cgroups, app, name

    def __call__(self) -> Group:
        return self.cgroups.process(self.app, self.name)


def placement(cgroups: Cgroups | None, app: str, name: str) -> Callable[[], Group] | None:
    """What gives each life of process ``name`` a new group of its own (None: no cgroups)."""
    return None if cgroups is None else Placement(cgroups, app, name)


def usage(slot: ProcessSlot) -> dict[str, Any]:
    """``cpu`` seconds and ``memory`` bytes of the slot's process and all it started."""
    return measure(slot.cgroup, slot.pid)


def discard(cgroups: Cgroups | None, app: str) -> None:
    """Remove the app's group once its processes are gone (a stopped or destroyed app)."""
    if cgroups is not None:
        with contextlib.suppress(OSError):  # left for the next start's clear (or a person)
            cgroups.app(app).remove()
