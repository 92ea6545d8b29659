"""App resource limits: the config vars ``DOKUEN_MEMORY_LIMIT`` (``512M``) and
``DOKUEN_PROCESS_LIMIT`` (``256``) read and checked, and what to write into a cgroup to apply
them. Pure: cgroups.py does the writing."""

import re

from dokuen.errors import SettingsError

MAX_PROCESSES = 4194304  # the kernel's own pid_max ceiling
MIN_MEMORY = 4 << 20
_SIZE = re.compile(r"([0-9]+)([KMGT]?)", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_memory_limit(text: str, key: str = "DOKUEN_MEMORY_LIMIT") -> int:
    """``512M`` -> 536870912: bytes, or a number with K, M, G or T (powers of 1024).

    Raises:
        SettingsError: naming ``key`` and the form it takes.
    """
    match = _SIZE.fullmatch(text.strip())
    value = int(match[1]) * _UNITS[match[2].upper()] if match else 0
    if value < MIN_MEMORY:
        raise SettingsError(
            f"{key}={text!r} is not a memory size of at least 4M (use a number of bytes, or "
            "one with K, M, G or T: 512M, 1G)"
        )
    return value


def parse_process_limit(text: str, key: str = "DOKUEN_PROCESS_LIMIT") -> int:
    """``64`` -> 64: how many processes (and threads) the app may have at once.

    Raises:
        SettingsError: naming ``key`` and the range it takes.
    """
    value = int(text) if text.strip().isdigit() else 0
    if not 1 <= value <= MAX_PROCESSES:
        raise SettingsError(
            f"{key}={text!r} is not a number of processes from 1 to {MAX_PROCESSES} (e.g. 256)"
        )
    return value


def show_size(size: int) -> str:
    """536870912 -> ``512M``: the largest unit that divides it."""
    for unit in ("T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def limit_files(
    version: int, controllers: frozenset[str], memory: int | None, processes: int | None
) -> list[tuple[str, str]]:
    """What to write into an app's group for its limits (None: no limit), in order."""
    unlimited = "max" if version == 2 else "-1"
    writes = []
    if "memory" in controllers:
        value = str(memory) if memory is not None else unlimited
        if version == 2:  # no swapping out instead of hitting the limit
            writes += [("memory.max", value), ("memory.swap.max", "0" if memory else "max")]
        else:
            writes += [("memory.limit_in_bytes", value), ("memory.memsw.limit_in_bytes", value)]
    if "pids" in controllers:
        writes.append(("pids.max", str(processes) if processes is not None else "max"))
    return writes
