"""When to restart a process that exited: a pure backoff policy over its run history."""

from collections.abc import Sequence
from dataclasses import dataclass

from dokuen.errors import SettingsError


@dataclass(frozen=True)
class Run:
    """One life of a process: when it was spawned and when it exited (monotonic seconds)."""

    started: float
    exited: float

    @property
    def uptime(self) -> float:
        return self.exited - self.started


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff.

    A run that lasted ``reset_after`` seconds forgives every failure before it. The first
    restart after a process that was up for at least ``fast_failure`` seconds is immediate
    (it was working, then died); otherwise the delay starts at ``first_delay`` and doubles to
    ``max_delay``. After ``limit`` fast failures in a row the process is crashed, unless
    ``limit`` is None (retry forever).
    """

    first_delay: float = 0.1
    max_delay: float = 30.0
    reset_after: float = 30.0
    fast_failure: float = 1.0
    limit: int | None = 10


def next_delay(history: Sequence[Run], policy: RestartPolicy) -> float | None:
    """Seconds to wait before the next start, or None when the process is crashed.

    ``history`` holds the process's runs, oldest first; the last one just ended.
    """
    streak = 0
    for run in reversed(history):
        if run.uptime >= policy.reset_after:
            break
        streak += 1
    if streak == 0:
        return 0.0
    fast = 0
    for run in reversed(history[-streak:]):
        if run.uptime >= policy.fast_failure:
            break
        fast += 1
    if policy.limit is not None and fast >= policy.limit:
        return None
    if streak == 1 and fast == 0:
        return 0.0
    # A bounded exponent: 2 ** 1024 does not convert to a float, and a streak that long
    # (limit=None, or runs that are slow but short of reset_after) is at max_delay anyway.
    return float(min(policy.max_delay, policy.first_delay * 2.0 ** min(streak - 1, 1000)))


def parse_restart_limit(text: str) -> int | None:
    """The app config var DOKUEN_RESTART_LIMIT: a count of fast failures, or ``forever``."""
    value = text.strip().lower()
    if value in {"forever", "always", "0"}:
        return None
    if value.isascii() and value.isdigit():
        return int(value)
    raise SettingsError(f"DOKUEN_RESTART_LIMIT={text!r} is not a number of restarts or 'forever'")
