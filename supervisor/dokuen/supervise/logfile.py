"""The unified log's file, the I/O half's helpers: batches written whole with ``writev``,
cut at a line end for rotation, and the lines a full disk keeps out of the file (``Gap``:
counted, and said once when it starts and once when writing works again)."""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

Part = bytes | memoryview  # a piece of the rendered stream
# Free bytes a file system that was full must have again before lines are written to it:
# each write that fits a moment after one that did not would start and end a gap of its
# own (the failed write's bytes, cut back, are such a moment).
RESUME_ROOM = 256 << 10


def has_room(fd: int) -> bool:
    """Whether the file system of ``fd`` has ``RESUME_ROOM`` free (True when it cannot tell:
    the next write says)."""
    try:
        info = os.fstatvfs(fd)
    except OSError:
        return True
    return info.f_bavail * info.f_frsize >= RESUME_ROOM


@dataclass
class Gap:
    """The lines the file could not take since a write first failed (a full disk)."""

    since: str  # the timestamp of that write
    error: str  # why, as the system said it
    lines: int = 0
    size: int = 0

    def add(self, parts: Sequence[Part]) -> None:
        self.lines += sum(bytes(part).count(b"\n") for part in parts)
        self.size += sum(map(len, parts))

    def message(self, until: str) -> str:
        """The line that goes into the log once it can be written again."""
        return (
            f"{self.lines} lines ({_size(self.size)}) could not be written to this log from "
            f"{self.since} to {until}: {self.error}"
        )


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    raise AssertionError(size)  # pragma: no cover


def cut_batch(batch: Sequence[Part], room: int) -> tuple[list[Part], list[Part]]:
    """Split rendered parts at the first line end at or past ``room`` bytes (all of them
    when they fit): what goes into the current file, and what goes into the next."""
    total = 0
    for index, chunk in enumerate(batch):
        if total + len(chunk) >= room:
            start = max(room - total - 1, 0)
            found = (chunk if isinstance(chunk, bytes) else bytes(chunk)).find(b"\n", start)
            if found >= 0:
                head, rest = chunk[: found + 1], chunk[found + 1 :]
                return [*batch[:index], head], [*([rest] if rest else []), *batch[index + 1 :]]
            room = total + len(chunk)  # a prefix: the line ends in a part after it
        total += len(chunk)
    return list(batch), []


IOV_MAX = 1024  # Linux's limit on the buffers of one writev
# Bytes per writev: on the benchmark machine one 8 MiB write into the page cache costs 7
# times the CPU of eight 1 MiB writes (the kernel's copy into freshly allocated folios).
WRITE_SIZE = 1 << 20


def write_all(fd: int, parts: Sequence[Part]) -> None:
    """Write every part, in order, with writev: one system call for up to IOV_MAX parts and
    about WRITE_SIZE bytes, more only when the kernel takes less than all of it."""
    views = [memoryview(part) for part in parts if part]
    first = 0
    while first < len(views):
        last, size = first, 0
        while last < len(views) and last - first < IOV_MAX and size < WRITE_SIZE:
            size += len(views[last])
            last += 1
        written = os.writev(fd, views[first:last])
        while written:
            if written >= len(views[first]):
                written -= len(views[first])
                first += 1
            else:
                views[first], written = views[first][written:], 0


def open_log(path: Path) -> int:
    """The log file, opened to append. Read-write, so the descriptor a follower duplicates
    can serve tail reads too."""
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


def rotate(path: Path, keep: int) -> int:
    """Open a fresh file first (one that cannot be made, out of inodes or descriptors,
    leaves every name as it was), then shift ``path.N`` up by one, drop the oldest, and put
    the fresh one in ``path``'s place; its descriptor."""
    fresh = path.with_name(f"{path.name}.new")
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    fd = os.open(fresh, flags, 0o640)
    try:
        for number in range(keep - 1, 0, -1):
            older = path.with_name(f"{path.name}.{number}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{number + 1}"))
        if keep > 0:
            path.replace(path.with_name(f"{path.name}.1"))
        fresh.replace(path)
    except OSError:
        os.close(fd)
        raise
    return fd
