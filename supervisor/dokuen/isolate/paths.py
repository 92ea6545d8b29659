"""Opening what an app or a build controls without following its links.

dokuend runs as root; a release, a build directory or a build cache is written by an app's
build. A ``Procfile`` there that is a symbolic link to ``/etc/shadow``, or a directory
swapped for a link while dokuend walks the tree, must never make root read or change what
the link points at. So every path below a trusted directory is walked one component at a
time from a directory file descriptor, each opened with ``O_NOFOLLOW`` (``openat``), and
the last one must be a regular file; trees are changed through ``os.fwalk`` with
``follow_symlinks=False``, links themselves changed, never followed.

The ``root`` these functions take is dokuend's own directory (a release, a source copy):
it is trusted as given. Everything below it is not.
"""

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from dokuen.errors import UnsafeFile

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: should a FIFO be swapped in between the check and the open, the open must
# not wait for a writer (it is then refused by the fstat check).
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_KINDS = {
    stat.S_IFREG: "a regular file",
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}
_FIX = "commit the file itself"  # for a link
MAX_LINKS = 40  # as the kernel's own limit on links in one path (ELOOP)


def read_file(root: Path, relative: str, limit: int) -> bytes:
    """The bytes of ``root/relative``, reached without following a link below ``root``.

    Args:
        root: a directory of dokuend's own (trusted as given).
        relative: the path below it, as shown in errors (``Procfile``, ``config/app.json``).
        limit: the most bytes it may hold.

    Raises:
        FileNotFoundError: it (or a directory on the way) does not exist.
        UnsafeFile: a component is a symbolic link, the file is not a regular file, a
            directory on the way is not a directory, or it holds more than ``limit`` bytes.
    """
    parts = _parts(relative)
    with (
        _open_dir(root) as fd,
        _walk(fd, parts[:-1], relative) as parent,
        _open_file(parent, parts[-1], relative) as handle,
    ):
        return _read_limited(handle, relative, limit)


def read_optional(root: Path, relative: str, limit: int) -> bytes | None:
    """As ``read_file``, but None when the file is not there (a dangling link is there)."""
    try:
        return read_file(root, relative, limit)
    except FileNotFoundError:
        return None


def is_file(root: Path, relative: str) -> bool:
    """``[[ -f root/relative ]]`` as a bundled buildpack's ``bin/detect`` asks it, for a
    tree an app controls: whether it is a regular file. Walked without following links
    from ``root``: a link is followed only while it stays inside ``root`` (its target, read
    as text, joined to its directory), so an app may link one of its files to another.

    Raises:
        UnsafeFile: a link on the way leads out of ``root`` (an absolute target, or one
            that climbs out), or there are more than ``MAX_LINKS`` links. Its target is
            never looked at: the line is the same whether or not it exists.
    """
    path = PurePosixPath(*_parts(relative))
    for _ in range(MAX_LINKS + 1):
        with _open_dir(root) as fd:
            found = _look(fd, path.parts, relative)
        if not isinstance(found, PurePosixPath):
            return found
        path = found
    raise UnsafeFile(f"{relative} leads through more than {MAX_LINKS} symbolic links; {_FIX}")


def _look(fd: int, parts: tuple[str, ...], shown: str) -> "bool | PurePosixPath":
    """Whether ``parts`` is a regular file below ``fd``, or the path a link inside the tree
    stands for (to look at from the top again)."""
    opened: list[int] = []
    try:
        current = fd
        for index, name in enumerate(parts):
            try:
                info = _lstat(current, name)
            except FileNotFoundError:
                return False
            last = index == len(parts) - 1
            if stat.S_ISLNK(info.st_mode):
                return _inside(current, info, parts, index, shown)
            if last:
                return stat.S_ISREG(info.st_mode)
            if not stat.S_ISDIR(info.st_mode):
                return False  # test -f through a file: no
            current = _checked_open(current, name, _DIRECTORY, info, shown)
            opened.append(current)
        return False  # no parts: the root itself, a directory
    finally:
        for each in opened:
            os.close(each)


def _inside(
    fd: int, info: os.stat_result, parts: tuple[str, ...], index: int, shown: str
) -> PurePosixPath:
    """Where the link ``parts[index]`` (below ``fd``) leads, as a path below the root;
    UnsafeFile when that is outside it, decided from the link's text alone."""
    name = parts[index]
    target = os.readlink(name, dir_fd=fd)
    joined = os.path.normpath(os.path.join(*parts[:index], target))
    if os.path.isabs(target) or joined == ".." or joined.startswith("../"):
        where = shown if index == len(parts) - 1 else f"{name}/ in {shown}"
        raise _refusal(fd, name, info, where, "a regular file")
    return PurePosixPath(joined, *parts[index + 1 :])


def chown_tree(top: Path, uid: int, gid: int) -> None:
    """Give ``top`` and everything below it to ``uid``:``gid``, through directory file
    descriptors: a symbolic link is changed itself (lchown), never followed, and a
    directory swapped for a link during the walk is not entered. Given to another uid, a
    file with more than one name that is not the uid's already is left as it is: its
    inode is also somewhere else (an earlier release a build linked it into, or a file
    of the system on a host without fs.protected_hardlinks)."""
    giving_away = uid != os.geteuid()
    with _open_dir(top) as fd:
        os.fchown(fd, uid, gid)
    for _path, dirs, files, dir_fd in os.fwalk(top, follow_symlinks=False):
        for index, name in enumerate([*dirs, *files]):
            # Gone meanwhile (a build's temporary file): nothing left to hand over.
            with contextlib.suppress(FileNotFoundError):
                if giving_away and index >= len(dirs):
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if info.st_nlink > 1 and info.st_uid != uid:
                        continue
                os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


# -- the walk -------------------------------------------------------------------------


def _parts(relative: str) -> list[str]:
    path = PurePosixPath(relative)
    parts = [part for part in path.parts if part not in ("", ".")]
    if path.is_absolute() or not parts or ".." in parts:
        raise ValueError(f"{relative!r} is not a relative path below its root")
    return parts


@contextlib.contextmanager
def _open_dir(root: Path) -> Iterator[int]:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _walk(fd: int, names: list[str], shown: str) -> Iterator[int]:
    """The directory ``names`` leads to from ``fd``, one ``O_NOFOLLOW`` open a step."""
    opened: list[int] = []
    try:
        current = fd
        for name in names:
            info = _lstat(current, name)
            if not stat.S_ISDIR(info.st_mode):
                raise _refusal(current, name, info, f"{name}/ in {shown}", "a directory")
            current = _checked_open(current, name, _DIRECTORY, info, shown)
            opened.append(current)
        yield current
    finally:
        for each in opened:
            os.close(each)


@contextlib.contextmanager
def _open_file(fd: int, name: str, shown: str) -> Iterator[int]:
    info = _lstat(fd, name)
    if not stat.S_ISREG(info.st_mode):
        raise _refusal(fd, name, info, shown, "a regular file")
    handle = _checked_open(fd, name, _FILE, info, shown)
    try:
        yield handle
    finally:
        os.close(handle)


def _lstat(fd: int, name: str) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except NotADirectoryError:
        raise FileNotFoundError(name) from None


def _checked_open(fd: int, name: str, flags: int, seen: os.stat_result, shown: str) -> int:
    """Open ``name`` (never following a link) and make sure it is what ``seen`` was: a
    link or another file swapped in between the look and the open is refused."""
    try:
        opened = os.open(name, flags, dir_fd=fd)
    except OSError as exc:  # ELOOP: a link now; ENOTDIR: not a directory now
        raise UnsafeFile(f"{shown} changed while dokuend read it ({exc.strerror})") from None
    now = os.fstat(opened)
    if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino) or stat.S_IFMT(
        now.st_mode
    ) != stat.S_IFMT(seen.st_mode):
        os.close(opened)
        raise UnsafeFile(f"{shown} changed while dokuend read it; deploy again")
    return opened


def _refusal(fd: int, name: str, info: os.stat_result, shown: str, wanted: str) -> UnsafeFile:
    if stat.S_ISLNK(info.st_mode):
        try:
            target = _printable(os.readlink(name, dir_fd=fd))
        except OSError:
            target = "somewhere"
        return UnsafeFile(f"{shown} is a symbolic link (to {target}); {_FIX}")
    kind = _KINDS.get(stat.S_IFMT(info.st_mode), "something else")
    return UnsafeFile(f"{shown} is {kind}, not {wanted}; make it {wanted}")


def _printable(text: str) -> str:
    """A link's target as it may be shown: printable, and not too long."""
    shown = text if text.isprintable() else repr(text)[1:-1]
    return shown if len(shown) <= 200 else shown[:200] + "..."


def _read_limited(fd: int, shown: str, limit: int) -> bytes:
    os.set_blocking(fd, True)
    chunks: list[bytes] = []
    size = 0
    while chunk := os.read(fd, min(1 << 16, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise UnsafeFile(f"{shown} is larger than {_size(limit)}; keep it under that")
    return b"".join(chunks)


def _size(limit: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= scale and limit % scale == 0:
            return f"{limit // scale} {unit}"
    return f"{limit} bytes"
