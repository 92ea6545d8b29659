"""Which owner and mode each file under DOKUEN_HOME gets (docs/security.md "Users and
files"), and applying them without ever following a symbolic link.

``home_layout`` and ``app_layout`` are pure: they say what should be. ``apply`` makes it so,
opening each path with O_NOFOLLOW and changing it through the open descriptor, so a link
put in the place of a file changes nothing it points at. ``hand_over`` gives a whole tree
(a built release) to an app through ``paths.chown_tree``, never through a link.
"""

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from dokuen.isolate.paths import chown_tree
from dokuen.store import AppDir


def permits(info: os.stat_result, uid: int, gid: int, want: int) -> bool:
    """Whether a user ``uid`` whose only group is ``gid`` has the permission ``want`` (an
    octal digit: 4 read, 2 write, 1 search or execute) on the file ``info`` describes: its
    owner's bits, else its group's, else everyone else's, as the kernel picks them."""
    shift = 6 if info.st_uid == uid else 3 if info.st_gid == gid else 0
    return bool(info.st_mode >> shift & want)


KEEP = -1  # an owner or group left as it is (os.chown's own meaning of -1)
# Files beside an app's directories: its formation, domains, records and secrets.
APP_FILES = (
    "formation.json",
    "domains",
    "stopped",
    "build-uid",
    "identity",
    "last-build.log",
    "database.json",
)


@dataclass(frozen=True)
class Entry:
    path: Path
    mode: int
    uid: int = KEEP
    gid: int = KEEP
    directory: bool = True
    create: bool = False  # made when missing (else a missing path is left missing)


def home_layout(
    home: Path, admin_gid: int | None, git_account: tuple[int, int] | None = None
) -> list[Entry]:
    """The home itself: traversable, never listable; the unified log for root and the
    admin group; the settings file (it may hold keys) for dokuend alone. With a
    ``git_account`` (who pushes over ssh): tmp/, where pushes are checked out, is its, and
    it may read authorized_keys (sshd reads it as that account)."""
    group = KEEP if admin_gid is None else admin_gid
    pusher, pusher_group = git_account or (KEEP, KEEP)
    ssh_mode, keys_mode = (0o700, 0o600) if git_account is None else (0o750, 0o640)
    entries = [
        Entry(home, 0o711, create=True),
        Entry(home / "apps", 0o711, create=True),
        Entry(home / "uids", 0o700),
        Entry(home / "tmp", 0o700, pusher, pusher_group, create=git_account is not None),
        Entry(home / ".ssh", ssh_mode, KEEP, pusher_group),
        Entry(home / ".ssh" / "authorized_keys", keys_mode, KEEP, pusher_group, directory=False),
        Entry(home / "logs", 0o750, gid=group, create=True),
        Entry(home / "nginx" / "logs", 0o750, gid=group),
        Entry(home / "dokuend.env", 0o600, directory=False),
    ]
    logs = [*(home / "logs").glob("dokuen.log*"), *(home / "nginx" / "logs").glob("*.log")]
    entries += [Entry(path, 0o640, gid=group, directory=False) for path in sorted(logs)]
    return entries


def app_layout(
    app: AppDir,
    uid: int | None,
    gid: int | None,
    build_uid: int | None,
) -> list[Entry]:
    """One app's tree. ``uid``/``gid``: what its processes run as (None: dokuend's own user,
    nothing changes hands); ``build_uid``: what its builds run as (None: likewise).

    The app's directory is traversable (its builds and the git account must pass through
    to cache/ and repo.git/) but not listable, and everything in it is private to its
    owner: the env dir and records to dokuend, the data dir and releases to the app, the
    cache to the app's builds, the repository to whoever owns it (the ssh account)."""
    owner = KEEP if uid is None else uid
    group = KEEP if gid is None else gid
    builds = KEEP if build_uid is None else build_uid
    entries = [
        Entry(app.root, 0o711, gid=group),
        Entry(app.env, 0o700),
        Entry(app.releases, 0o711, create=True),
        Entry(app.data, 0o700, owner, group, create=True),
        Entry(app.cache, 0o700, builds, builds, create=True),
        Entry(app.workspace, 0o700),
        Entry(app.repo, 0o700),
    ]
    entries += [Entry(app.root / name, 0o600, directory=False) for name in APP_FILES]
    if app.releases.is_dir():
        for entry in sorted(app.releases.iterdir()):
            if entry.suffix in (".json", ".log"):
                entries.append(Entry(entry, 0o600, directory=False))
            elif entry.name.startswith("v"):  # a release: the app's alone (hand_over)
                entries.append(Entry(entry, 0o700))
    return entries


def _open(path: Path, directory: bool) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    return os.open(path, flags | (os.O_DIRECTORY if directory else 0))


def apply(entries: list[Entry]) -> list[str]:
    """Give each existing entry its owner and mode (making those marked ``create``); return
    what could not be done, one line each (a link or another kind of file where a file or
    directory belongs is left alone and reported)."""
    problems = []
    for entry in entries:
        try:
            fd = _open(entry.path, entry.directory)
        except FileNotFoundError:
            if not entry.create:
                continue
            if entry.directory:
                entry.path.mkdir(mode=0o700, exist_ok=True)
            else:
                os.close(os.open(entry.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
            fd = _open(entry.path, entry.directory)
        except OSError as exc:  # ELOOP: a link; ENOTDIR: a file where a directory belongs
            problems.append(f"{entry.path}: left as it is ({exc.strerror})")
            continue
        try:
            info = os.fstat(fd)
            if not entry.directory and not stat.S_ISREG(info.st_mode):
                problems.append(f"{entry.path}: not a regular file, left as it is")
                continue
            if (entry.uid, entry.gid) != (KEEP, KEEP):
                os.fchown(fd, entry.uid, entry.gid)
            os.fchmod(fd, entry.mode)
        finally:
            os.close(fd)
    return problems


def hand_over(top: Path, uid: int, gid: int, mode: int = 0o700) -> None:
    """Give the tree ``top`` (the top a real directory, not a link) with everything in it to
    ``uid``:``gid`` (``paths.chown_tree``: nothing inside is followed); ``top`` gets
    ``mode``, the rest keep theirs."""
    fd = _open(top, directory=True)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    chown_tree(top, uid, gid)
