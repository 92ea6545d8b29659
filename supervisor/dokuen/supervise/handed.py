"""The FIFO readers a re-exec hands to the next image of dokuend. Without them, a process
that exits between the ``execve`` and the new image's adoption takes its unread output
with it: a pipe nobody holds open any more is emptied by the kernel. So the old image
makes its readers inheritable just before the ``execve`` and names them in the
environment (``FIFO_FDS``: ``fd=path`` pairs); the new image takes them at once (close-on-
exec again, the variable out of the environment), reads each FIFO through the descriptor it
inherited, and closes those no adopted process uses."""

import contextlib
import os
import stat
from collections.abc import Iterable

FIFO_FDS = "DOKUEND_FIFO_FDS"

_taken: dict[str, int] = {}  # path -> the descriptor the last image handed over


def hand(readers: Iterable[tuple[int, str]], inheritable: bool = True) -> str:
    """Make ``readers`` (descriptor, FIFO path) inheritable (or not again) and return the
    value of ``FIFO_FDS`` that names them."""
    pairs = []
    for fd, path in readers:
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, inheritable)
            pairs.append(f"{fd}={path}")
    return "\n".join(pairs)


def take() -> None:
    """First thing at start: the readers the last image handed over, kept from children."""
    for pair in os.environ.pop(FIFO_FDS, "").split("\n"):
        fd_text, _, path = pair.partition("=")
        if not fd_text.isdigit() or not path:
            continue
        fd = int(fd_text)
        try:
            os.set_inheritable(fd, False)
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                continue  # not ours: leave it alone
        except OSError:
            continue
        _taken[path] = fd


def claim(path: str) -> int | None:
    """The handed-over reader of the FIFO at ``path`` (for the caller to own), when it is
    still that FIFO; None when there is none."""
    fd = _taken.pop(path, None)
    if fd is None:
        return None
    try:
        same = os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


def close_rest() -> None:
    """After adoption: the readers of FIFOs no adopted process uses are closed."""
    while _taken:
        _, fd = _taken.popitem()
        with contextlib.suppress(OSError):
            os.close(fd)
