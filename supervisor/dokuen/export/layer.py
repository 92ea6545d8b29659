"""A directory tree as a deterministic image layer (a tar), read without following links:
the slug an app's build wrote, tarred by dokuend (root) for ``dokuenctl image``."""

import io
import os
import stat
import tarfile
from pathlib import Path
from typing import IO, NamedTuple

from dokuen.errors import UnsafeFile
from dokuen.isolate.modes import permits


def write_layer(
    root: Path,
    out: IO[bytes],
    *,
    prefix: str,
    uid: int,
    gid: int,
    mtime: int,
    reader: tuple[int, int] | None = None,
) -> None:
    """Write the tree under ``root`` to ``out`` as a tar whose entries are ``prefix/...``,
    sorted, owned by ``uid``:``gid``, with ``mtime``. Directories, regular files and
    symbolic links (as links) go in; anything else (a FIFO, a socket) is left out. Below
    ``root`` nothing is followed: each file is opened ``O_NOFOLLOW`` from its directory's
    descriptor and must still be a regular file (an app wrote the tree).

    ``reader`` is the app's uid and gid: a file that user could not read itself is refused,
    so that root never copies out a hard link the app made to a file not its own (possible
    where ``fs.protected_hardlinks`` is 0)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            tar.addfile(_info(f"{prefix}/", os.fstat(top), uid, gid, mtime))
            _add_tree(tar, top, _Walk(prefix, uid, gid, mtime, reader))
        finally:
            os.close(top)


class _Walk(NamedTuple):
    prefix: str
    uid: int
    gid: int
    mtime: int
    reader: tuple[int, int] | None

    def below(self, name: str) -> "_Walk":
        return self._replace(prefix=f"{self.prefix}/{name}")


def _info(name: str, status: os.stat_result, uid: int, gid: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name.rstrip("/"))
    info.mode = stat.S_IMODE(status.st_mode) & 0o7777 & ~0o6000  # no setuid, no setgid
    info.uid, info.gid, info.uname, info.gname, info.mtime = uid, gid, "", "", mtime
    if stat.S_ISDIR(status.st_mode):
        info.type = tarfile.DIRTYPE
    return info


def _add_tree(tar: tarfile.TarFile, directory: int, walk: _Walk) -> None:
    uid, gid, mtime = walk.uid, walk.gid, walk.mtime
    for name in sorted(os.listdir(directory)):
        status = os.stat(name, dir_fd=directory, follow_symlinks=False)
        path = f"{walk.prefix}/{name}"
        if stat.S_ISLNK(status.st_mode):
            info = _info(path, status, uid, gid, mtime)
            info.type, info.linkname, info.mode = (
                tarfile.SYMTYPE,
                os.readlink(name, dir_fd=directory),
                0o777,
            )
            tar.addfile(info)
        elif stat.S_ISDIR(status.st_mode):
            child = _open(name, directory, os.O_DIRECTORY)
            try:
                tar.addfile(_info(path, os.fstat(child), uid, gid, mtime))
                _add_tree(tar, child, walk.below(name))
            finally:
                os.close(child)
        elif stat.S_ISREG(status.st_mode):
            fd = _open(name, directory, os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as handle:
                current = os.fstat(handle.fileno())
                if not stat.S_ISREG(current.st_mode):
                    raise UnsafeFile(f"{path}: changed while it was read (not a file now)")
                if walk.reader and not permits(current, *walk.reader, 4):
                    raise UnsafeFile(
                        f"{path}: the app's user may not read it (owner uid {current.st_uid},"
                        f" mode {stat.S_IMODE(current.st_mode):o}); remove it from the release"
                    )
                info = _info(path, current, uid, gid, mtime)
                info.size = current.st_size
                tar.addfile(info, _Exactly(handle, current.st_size, path))


def _open(name: str, directory: int, flags: int) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | flags, dir_fd=directory)
    except OSError as exc:
        raise UnsafeFile(
            f"{name}: cannot open it without following a link ({exc.strerror})"
        ) from None


class _Exactly(io.RawIOBase):
    """``size`` bytes of a file that may change as it is read: a file that shrank is an
    error, never a layer whose tar header lies."""

    def __init__(self, handle: IO[bytes], size: int, path: str) -> None:
        self._handle, self._left, self._path = handle, size, path

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        want = self._left if size < 0 else min(size, self._left)
        data = self._handle.read(want)
        if len(data) < want:
            raise UnsafeFile(f"{self._path}: shrank while it was read")
        self._left -= len(data)
        return data
