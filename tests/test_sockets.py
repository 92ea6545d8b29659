"""Each app's socket directory, with a real unix socket standing in for PostgreSQL's: who may
connect through the app's link, and what dokuend refuses to follow or make."""

import contextlib
import grp
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dokuen.data import sockets
from dokuen.data.sockets import SocketError

NOBODY = 65534
AS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)


@pytest.fixture
def home() -> Iterator[Path]:
    """A DOKUEN_HOME that any uid may pass through (pytest's own are closed to others)."""
    top = Path(tempfile.mkdtemp(prefix="dokuen-sock-"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top)


@contextlib.contextmanager
def listening(path: Path) -> Iterator[socket.socket]:
    """A unix socket bound at ``path`` as PostgreSQL's is: mode 0777, its directory 0700."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    path.chmod(0o777)
    server.listen(8)
    try:
        yield server
    finally:
        server.close()
        path.unlink(missing_ok=True)


def connect_as(gid: int, path: Path) -> str:
    """Connect to the unix socket ``path`` as uid nobody with only group ``gid``; return
    ``ok`` or the errno's name."""
    code = (
        "import errno, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "    print('ok')\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno])\n"
    )
    result = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={gid}",
            "--clear-groups",
            sys.executable,
            "-c",
            code,
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def two_groups() -> tuple[int, int]:
    """Two real groups that are neither root's nor nobody's."""
    found = [g.gr_gid for g in grp.getgrall() if g.gr_gid not in (0, NOBODY)]
    assert len(found) >= 2
    return found[0], found[1]


def test_the_directory_is_dokuends_and_the_apps_group_0750(home: Path) -> None:
    cluster = home / "postgres" / "run" / sockets.socket_name(5433)
    app = home / "apps" / "blog"
    app.mkdir(parents=True)
    gid = two_groups()[0] if os.geteuid() == 0 else os.getegid()
    with listening(cluster):
        directory = sockets.prepare(app, cluster, gid)
        assert directory == app / "run" / "postgresql"
        for path in (directory, directory.parent):
            info = path.lstat()
            assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (
                0o750,
                os.geteuid(),
                gid,
            )
        link = directory / cluster.name
        assert link.lstat().st_ino == cluster.lstat().st_ino  # a hard link, not a symlink
        assert stat.S_ISSOCK(link.lstat().st_mode)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(link))  # a unix socket answers through any link to it


def test_none_is_dokuends_own_group() -> None:
    assert sockets.owner_for(None) == sockets.Owner(os.geteuid(), os.getegid(), 0o750)
    assert sockets.owner_for(1234).gid == 1234


@AS_ROOT
def test_only_the_apps_group_connects_through_its_link(home: Path) -> None:
    """The boundary itself: app A's gid reaches A's socket, not B's, and not the cluster's
    own socket directory."""
    group_a, group_b = two_groups()
    cluster = home / "postgres" / "run" / sockets.socket_name(5433)
    with listening(cluster):
        os.chown(cluster.parent, NOBODY - 1, NOBODY - 1)  # the cluster's account, 0700
        for name in ("a", "b"):
            (home / "apps" / name).mkdir(parents=True)
        a = sockets.prepare(home / "apps" / "a", cluster, group_a)
        b = sockets.prepare(home / "apps" / "b", cluster, group_b)
        assert connect_as(group_a, a / cluster.name) == "ok"
        assert connect_as(group_b, b / cluster.name) == "ok"
        assert connect_as(group_a, b / cluster.name) == "EACCES"
        assert connect_as(group_b, a / cluster.name) == "EACCES"
        assert connect_as(group_a, cluster) == "EACCES"
        assert connect_as(NOBODY, a / cluster.name) == "EACCES"


def test_a_restarted_cluster_is_linked_again_and_a_stopped_one_refuses(home: Path) -> None:
    cluster = home / "postgres" / "run" / sockets.socket_name(5433)
    app = home / "apps" / "blog"
    app.mkdir(parents=True)
    with listening(cluster):
        directory = sockets.prepare(app, cluster, None)
    link = directory / cluster.name
    with socket.socket(socket.AF_UNIX) as client, pytest.raises(ConnectionRefusedError):
        client.connect(str(link))  # the server is gone: refused, nothing else answers
    with listening(cluster):  # a new server, a new inode
        assert link.lstat().st_ino != cluster.lstat().st_ino
        (directory / sockets.socket_name(6000)).touch()  # from an earlier port
        assert sockets.relink_all(home / "apps", cluster) == []
        assert link.lstat().st_ino == cluster.lstat().st_ino
        assert sorted(p.name for p in directory.iterdir()) == [cluster.name]
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(link))
    sockets.remove(app)
    assert not directory.exists()


def test_a_link_in_the_way_is_refused_not_followed(home: Path) -> None:
    cluster = home / "postgres" / "run" / sockets.socket_name(5433)
    elsewhere = home / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    app = home / "apps" / "blog"
    (app / "run").mkdir(parents=True)
    (app / "run" / "postgresql").symlink_to(elsewhere)
    with listening(cluster), pytest.raises(SocketError, match="is not a directory"):
        sockets.prepare(app, cluster, None)
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o700  # its mode was not touched
    assert list(elsewhere.iterdir()) == []


def test_a_socket_path_too_long_for_libpq_is_refused_with_the_fix(home: Path) -> None:
    cluster = home / "postgres" / "run" / sockets.socket_name(5433)
    app = home / "apps" / ("a" * 63) / ("b" * 40)
    with pytest.raises(SocketError, match=r"longer than 107 bytes \(use a shorter app name"):
        sockets.prepare(app, cluster, None)
    assert not app.exists()
