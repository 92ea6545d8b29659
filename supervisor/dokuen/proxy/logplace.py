"""What stands at the router log's names in dokuend's own directory (router/), looked at
and cleared without following a link or waiting on a FIFO: the access log's name, which
root (a user's logrotate, a mistake) may point elsewhere, and the note of how far a file
was read (``router/read``, where holes cannot be punched).

Only dokuend and root can write the directory (0700): whatever else is found at a name was
put there by root, and it is cleared rather than used, since nginx's master (root) would
follow a link or block on a FIFO when it opens the name.
"""

import contextlib
import errno
import os
import stat
from pathlib import Path

NOTHING = "deleted"
OTHER_FILE = "replaced by another file"
_KINDS = {
    stat.S_IFLNK: "replaced by a symbolic link",
    stat.S_IFIFO: "replaced by a FIFO",
    stat.S_IFDIR: "replaced by a directory",
    stat.S_IFSOCK: "replaced by a socket",
    stat.S_IFCHR: "replaced by a device",
    stat.S_IFBLK: "replaced by a device",
}
_OPEN = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def own_directory(directory: Path) -> str | None:
    """Make ``directory`` dokuend's (0700) if it is not: what stood at its name instead (a
    link, a file, another user's directory) is cleared first, and said (the return).
    Raises OSError."""
    cleared = None
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid():
            if stat.S_IMODE(info.st_mode) != 0o700:
                os.chmod(directory, 0o700)
            return None
        cleared = _KINDS.get(stat.S_IFMT(info.st_mode), "replaced by a file")
        if stat.S_ISDIR(info.st_mode):
            cleared = f"replaced by a directory of uid {info.st_uid}"
        clear(directory)
    os.mkdir(directory, 0o700)
    return cleared


def own_file(path: Path) -> tuple[int, os.stat_result, str | None]:
    """Open (make) the plain file at ``path`` to read and punch, never following a link:
    its descriptor, its status, and what stood at its name instead, cleared first (a link,
    a FIFO, a directory, a file with another name). Raises OSError."""
    cleared = None
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            cleared = (
                standing(path, -1)
                if stat.S_ISREG(info.st_mode)
                else _KINDS.get(stat.S_IFMT(info.st_mode), "replaced")
            )
            clear(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    info = os.fstat(fd)  # (only dokuend or root can put a file there: whose is not checked)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:  # root, racing this
        os.close(fd)
        raise OSError(errno.EPERM, "not a file of dokuend's own", str(path))
    return fd, info, cleared


def standing(path: Path, inode: int) -> str | None:
    """None when ``path`` is still the file ``inode``; else what happened to the name:
    NOTHING, OTHER_FILE (a plain file with no other name: a logrotate's ``create``), or
    what stands there instead (a link, a FIFO, a directory...: to be cleared)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return NOTHING
    if info.st_ino == inode and stat.S_ISREG(info.st_mode):
        return None
    if stat.S_ISREG(info.st_mode):
        return OTHER_FILE if info.st_nlink == 1 else "replaced by a file with another name"
    return _KINDS.get(stat.S_IFMT(info.st_mode), "replaced")


def clear(path: Path) -> None:
    """Take away what stands at ``path`` without following or opening it: a name is
    unlinked (a link's target is untouched), an empty directory removed, a full one renamed
    to ``NAME.moved-INODE`` beside it. Raises OSError."""
    try:
        os.unlink(path)
    except IsADirectoryError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EISDIR, errno.EPERM):
            raise
    else:
        return
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        os.rename(path, path.with_name(f"{path.name}.moved-{os.lstat(path).st_ino}"))


def read_note(path: Path, inode: int, size: int) -> tuple[int, str | None]:
    """The offset the note at ``path`` gives for the file ``inode`` of ``size`` bytes, and
    why it was not taken, if so (the note is removed either way). 0 with no note, a note of
    another file, or one that is not a plain file (never read: a FIFO would block)."""
    why: str | None
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN)
    except FileNotFoundError:
        return 0, None
    except OSError as exc:  # a link (ELOOP), or what cannot be opened: cleared below
        text, why = b"", f"cannot open it ({exc.strerror})"
    else:
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                text, why = os.read(fd, 64), None
            else:
                text, why = b"", "not a plain file"
        finally:
            os.close(fd)
    with contextlib.suppress(OSError):
        clear(path)
    if why is not None:
        return 0, why
    try:
        noted, offset = map(int, text.split())
    except ValueError:
        return 0, f"not a note: {text[:20]!r}"
    if noted != inode:
        return 0, None  # another file's (one renamed since): this one is read whole
    if not 0 <= offset <= size:
        return 0, f"offset {offset} is past the file's end ({size})"
    return offset, None


def write_note(path: Path, inode: int, offset: int) -> None:
    """Write the note (made anew: whatever stood at ``path`` is cleared first, never
    followed). Raises OSError."""
    with contextlib.suppress(FileNotFoundError):
        clear(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN, 0o600)
    try:
        os.write(fd, f"{inode} {offset}\n".encode())
    finally:
        os.close(fd)
