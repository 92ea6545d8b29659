"""The kernel's side of the router access log (accesslog.py): a descriptor that is readable
when the file is written (inotify), holes punched over what was read (the blocks go back
to the file system, the size stays) and where the data starts after them. Through ctypes
(libc is the running program's: nothing more is loaded), imported by the first call: a
daemon with no router log never holds ctypes' module (0.16 MiB: tests/test_imports.py);
where there is none of it (not Linux), ``watch`` gives -1 and ``punch`` raises ENOSYS.
"""

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ctypes

_IN_MODIFY = 0x2
# A name made, removed or renamed in a watched directory (IN_CREATE, IN_DELETE,
# IN_MOVED_FROM, IN_MOVED_TO: something put in the place of the file), or the directory
# itself deleted or renamed (IN_DELETE_SELF, IN_MOVE_SELF: a link put in its place).
DIRECTORY_CHANGES = 0x100 | 0x200 | 0x40 | 0x80 | 0x400 | 0x800
_PUNCH = 0x2 | 0x1  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


def _libc() -> "ctypes.CDLL | None":
    import ctypes  # noqa: PLC0415 (see the module's docstring)

    try:  # the running program's own symbols (see supervise/reaper.py)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):  # not Linux
        return None
    return libc


_LIBC: Any = False  # not looked for yet


def _loaded() -> "ctypes.CDLL | None":
    global _LIBC  # noqa: PLW0603 (looked for once)
    if _LIBC is False:
        _LIBC = _libc()
    libc: ctypes.CDLL | None = _LIBC
    return libc


def watch(path: Path, notify: int = -1, mask: int = _IN_MODIFY) -> int:
    """An inotify descriptor (non-blocking) that is readable when the file now at ``path``
    is written (``notify``, another file's, given: it watches both; ``mask``
    DIRECTORY_CHANGES and a directory: when a name in it changes); -1 where there is none
    (a given ``notify`` stays open: its other watches go on)."""
    libc = _loaded()
    if libc is None:
        return -1
    made = notify < 0
    if made:
        notify = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    if notify < 0:
        return -1
    if libc.inotify_add_watch(notify, bytes(path), mask) < 0:
        if made:
            os.close(notify)
        return -1
    return notify


def punch(fd: int, offset: int, length: int) -> None:
    """Free the blocks of ``length`` bytes at ``offset`` (a block cut in two is zeroed).
    Raises OSError (EOPNOTSUPP where the file system cannot)."""
    libc = _loaded()
    if libc is None:
        raise OSError(errno.ENOSYS, "no fallocate")
    if libc.fallocate(fd, _PUNCH, offset, length) != 0:
        import ctypes  # noqa: PLC0415 (loaded by _loaded already)

        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def first_line(fd: int) -> int:
    """Where the first line not yet read starts: the first data after the holes, past the
    NUL bytes that a hole's last block was zeroed with."""
    try:
        start = os.lseek(fd, 0, getattr(os, "SEEK_DATA", -1))
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # nothing but holes
            return os.fstat(fd).st_size
        start = 0  # no SEEK_DATA here (EINVAL): the NUL bytes tell
    while chunk := os.pread(fd, 1 << 16, start):
        stripped = chunk.lstrip(b"\0")
        start += len(chunk) - len(stripped)
        if stripped:
            break
    return start
