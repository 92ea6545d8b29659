"""Each app's way in to the managed cluster: its own socket directory.

The cluster listens on no TCP port, only on the unix socket ``.s.PGSQL.PORT`` in
``postgres/run/`` (0700, the cluster's account): nobody else can enter that directory, so
nobody else can connect through it. Each app with a database gets
``apps/APP/run/postgresql/`` (0750, owner dokuend, group the app's gid) holding a hard
link to that socket: a unix socket connects through any link to its inode, and only the
app's group (and root) may pass through the app's directory to reach the link. The app's
``DATABASE_URL`` names that directory (``?host=DIR&port=PORT``).

A port that PostgreSQL does not listen on cannot be squatted: while the cluster is down an
app's connection finds a dead link (``connection refused``), never another listener that
would collect its password. The socket is a new inode at each start of the cluster, so
every link is made again (``relink_all``) before the cluster is said to accept connections.
"""

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from dokuen.errors import DokuenError

SOCKET_DIR_MODE = 0o750  # owner dokuend, group the app: the app passes, others do not
SOCKET_PATH_MAX = 107  # sun_path on Linux, less its terminating NUL


class SocketError(DokuenError):
    """An app's socket directory cannot be made or linked."""


def socket_name(port: int) -> str:
    """What PostgreSQL calls its socket for ``port`` (libpq looks for the same name)."""
    return f".s.PGSQL.{port}"


def app_socket_dir(app_root: Path) -> Path:
    """``apps/APP/run/postgresql``: where the app's link to the cluster's socket lives."""
    return app_root / "run" / "postgresql"


@dataclass(frozen=True)
class Owner:
    """Who a directory of the app's belongs to: dokuend's uid, and the app's group."""

    uid: int
    gid: int
    mode: int = SOCKET_DIR_MODE


def owner_for(gid: int | None) -> Owner:
    """The owner of an app's socket directory (and of its ``run/``).

    Args:
        gid: the app's own group, the one its processes run with; None (apps without
            their own uid, or a dokuend that is not root): dokuend's own gid, which every
            app shares then.
    """
    return Owner(os.geteuid(), os.getegid() if gid is None else gid)


def check_socket_path(directory: Path, port: int) -> Path:
    """``directory``'s socket path; raise SocketError when it is too long for a unix
    socket (libpq could not connect through it)."""
    path = directory / socket_name(port)
    if len(str(path).encode()) > SOCKET_PATH_MAX:
        raise SocketError(
            f"the PostgreSQL socket path {path} is longer than {SOCKET_PATH_MAX} bytes "
            "(use a shorter app name, or move DOKUEN_HOME to a shorter path)"
        )
    return path


def _directory(path: Path, owner: Owner) -> None:
    """``path`` as a real directory (not a link) with ``owner``'s ids and mode: changed
    through a descriptor opened without following a link."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (NotADirectoryError, OSError) as exc:
        raise SocketError(
            f"{path} is not a directory ({exc.strerror}; remove it, then: dokuenctl pg:create)"
        ) from None
    try:
        info = os.fstat(fd)
        if (info.st_uid, info.st_gid) != (owner.uid, owner.gid):
            os.fchown(fd, owner.uid, owner.gid)
        if stat.S_IMODE(info.st_mode) != owner.mode:
            os.fchmod(fd, owner.mode)
    finally:
        os.close(fd)


def link_socket(directory: Path, cluster_socket: Path) -> None:
    """Point ``directory``'s socket at ``cluster_socket`` (a hard link, swapped in whole
    with a rename, so a connection never finds no file at all). Blocking."""
    target = directory / cluster_socket.name
    spare = directory / f".link-{os.urandom(6).hex()}"  # not secrets: hmac links libcrypto
    try:
        os.link(cluster_socket, spare, follow_symlinks=False)
    except OSError as exc:
        raise SocketError(
            f"cannot link {cluster_socket} into {directory}: {exc.strerror} (DOKUEN_HOME's "
            "apps/ and postgres/ must be on one file system)"
        ) from None
    os.replace(spare, target)


def prepare(app_root: Path, cluster_socket: Path, gid: int | None) -> Path:
    """Make the app's socket directory (and ``apps/APP/run/``), owned by dokuend and the
    app's group, mode 0750, and link the cluster's socket into it; return the directory.

    Args:
        app_root: ``apps/APP``.
        cluster_socket: the cluster's own socket, ``postgres/run/.s.PGSQL.PORT``; it need
            not exist yet (``relink_all`` links it once the cluster runs).
        gid: the app's group (see ``owner_for``).

    Raises:
        SocketError: the path is too long for a socket, something else is in the way, or
            the link cannot be made.
    """
    directory = app_socket_dir(app_root)
    check_socket_path(directory, int(cluster_socket.name.rsplit(".", 1)[1]))
    owner = owner_for(gid)
    _directory(directory.parent, owner)
    _directory(directory, owner)
    if cluster_socket.exists():
        link_socket(directory, cluster_socket)
    return directory


def relink_all(apps_root: Path, cluster_socket: Path) -> list[str]:
    """Link the cluster's new socket into every app's socket directory that exists;
    return the apps whose link could not be made (blocking)."""
    failed = []
    for directory in sorted(apps_root.glob("*/run/postgresql")):
        try:
            if not stat.S_ISDIR(os.lstat(directory).st_mode):
                continue  # not one we made: prepare() refuses it when the app asks
            for stale in directory.glob(".s.PGSQL.*"):
                if stale.name != cluster_socket.name:  # the port changed
                    stale.unlink(missing_ok=True)
            link_socket(directory, cluster_socket)
        except (SocketError, OSError):  # one app's trouble must not keep the others out
            failed.append(directory.parent.parent.name)
    return failed


def remove(app_root: Path) -> None:
    """Take the app's socket directory away (its database is gone)."""
    directory = app_socket_dir(app_root)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in directory.iterdir():
            entry.unlink(missing_ok=True)
        directory.rmdir()
