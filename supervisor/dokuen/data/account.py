"""Who the managed cluster runs as, and what that account owns.

PostgreSQL refuses to run as root, so a root dokuend runs its cluster as a system account
of its own, ``dokuen-postgres`` (made with ``useradd --system`` when missing; the setting
DOKUEN_POSTGRES_USER names another). It is not the distribution's shared ``postgres``
account: whoever runs as that one (the system's own clusters, their tools) would own the
apps' data too. The account owns the cluster's data directory and its socket directory
(both 0700) and nothing else; the superuser's password stays root's (0600).

A cluster made by Dokuen 0.1 belongs to ``postgres``: at start its tree is given to the
account the cluster runs as now (``adopt``), without following a link.
"""

import contextlib
import os
import pwd
import stat
import subprocess
import time
from pathlib import Path

from dokuen.errors import DokuenError

ACCOUNT = "dokuen-postgres"
USERADD_TRIES = 5
NOLOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")


class AccountError(DokuenError):
    """The cluster's account cannot be found or made."""


def cluster_user(configured: str | None, euid: int) -> str | None:
    """Who the managed cluster runs as: DOKUEN_POSTGRES_USER when set, else
    ``dokuen-postgres`` when dokuend is root, else None (dokuend's own user: it cannot
    switch, and needs not)."""
    if euid != 0:
        return None
    return configured if configured is not None else ACCOUNT


def useradd_argv(name: str) -> list[str]:
    """The command that makes ``name`` a system account with no home and no login shell,
    and a group of its own."""
    shell = next((path for path in NOLOGIN_SHELLS if os.access(path, os.X_OK)), "/bin/false")
    return [
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        shell,
        "--comment",
        "Dokuen PostgreSQL cluster",
        name,
    ]


def ensure_account(name: str) -> pwd.struct_passwd:
    """The account ``name``, made first if it is Dokuen's own and missing (blocking).

    Raises:
        AccountError: it is missing and is not ours to make (DOKUEN_POSTGRES_USER names
            it), or ``useradd`` failed; the message says what to do.
    """
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if name != ACCOUNT:
        raise AccountError(
            f"DOKUEN_POSTGRES_USER={name}: no such user (create it, or unset the setting "
            f"so that dokuend makes and uses {ACCOUNT})"
        )
    said = ""
    for attempt in range(USERADD_TRIES):
        try:
            done = subprocess.run(
                useradd_argv(name), capture_output=True, text=True, check=False, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AccountError(f"cannot make the system account {name}: {exc}") from None
        with contextlib.suppress(KeyError):
            # Made now, or by another dokuend on this machine at the same moment.
            return pwd.getpwnam(name)
        said = f"useradd exited {done.returncode}: {' '.join(done.stderr.split())}"
        # Exit 10: /etc/passwd was locked by another useradd (another app's account?).
        time.sleep(0.2 * (attempt + 1))
    raise AccountError(
        f"cannot make the system account {name} ({said}); make it by hand: "
        f"{' '.join(useradd_argv(name))}"
    )


def adopt(top: Path, account: pwd.struct_passwd) -> int:
    """Give every file under ``top`` (and ``top``) to ``account`` unless it has it already,
    never following a link (a link itself changes owner; what it points to does not).
    Returns how many changed. Blocking."""
    changed = 0
    info = os.lstat(top)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise AccountError(f"{top} is not a directory (move it away and start again)")
    # fwalk opens each directory relative to its parent's descriptor and checks it is the
    # directory it listed: a directory swapped for a link is not entered.
    for _dirpath, dirnames, filenames, dirfd in os.fwalk(top, follow_symlinks=False):
        for entry in (*dirnames, *filenames):
            found = os.stat(entry, dir_fd=dirfd, follow_symlinks=False)
            if (found.st_uid, found.st_gid) != (account.pw_uid, account.pw_gid):
                os.chown(entry, account.pw_uid, account.pw_gid, dir_fd=dirfd, follow_symlinks=False)
                changed += 1
    # The top last: its owner is what says the move is done (one cut short starts again).
    if (info.st_uid, info.st_gid) != (account.pw_uid, account.pw_gid):
        os.chown(top, account.pw_uid, account.pw_gid, follow_symlinks=False)
        changed += 1
    return changed
