"""What nginx could not write to the router access log (a full disk, the file gone): it
says so in its error log, an alert a minute at most while it cannot, so what it dropped
is counted by alert, not by line. The error log is read without following a link or
waiting on a FIFO put at its name."""

import os
import stat
from pathlib import Path

UNSENT = (b'access.log" failed', b'access.log" was incomplete')  # nginx's alerts


class Unsent:
    """Counts nginx's alerts in ``path`` written since the last look (what was there when
    it was made is not counted: it came before this dokuend)."""

    __slots__ = ("_read", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._read = _size(path)

    def count(self) -> int:
        """The alerts written since the last call."""
        size = _size(self.path)
        if size == self._read:
            return 0
        start = self._read if size > self._read else 0  # rotated: all of it
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return 0
        try:
            text = os.pread(fd, size - start, start)
        except OSError:
            return 0
        finally:
            os.close(fd)
        self._read = size
        return sum(map(text.count, UNSENT))


def _size(path: Path) -> int:
    """A plain file's size (0 for anything else, or nothing)."""
    try:
        info = os.lstat(path)
    except OSError:
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0
