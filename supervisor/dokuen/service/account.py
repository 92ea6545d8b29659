"""The service's account and who reaches it: the ``dokuen`` user that owns the state, its
group (whose members may use the control socket), and how dokuenctl finds the service's
socket when its user has no dokuend of their own."""

import grp
import os
import pwd
from collections.abc import Callable, Mapping
from pathlib import Path

from dokuen.settings import home_and_socket

SERVICE_USER = "dokuen"
SERVICE_GROUP = "dokuen"
SERVICE_SOCKET = Path("/var/lib/dokuen/dokuend.sock")  # the system service's, either kind


def socket_group() -> str | None:
    """``dokuen`` when dokuend runs as the service (as root, or with ``dokuen`` as its
    group) and that group exists: the control socket is then 0660 for it. Otherwise None,
    and the socket stays 0600: a person's own dokuend is not opened to a group they happen
    to be in."""
    try:
        gid = grp.getgrnam(SERVICE_GROUP).gr_gid
    except KeyError:
        return None
    return SERVICE_GROUP if os.geteuid() == 0 or os.getegid() == gid else None


def git_account() -> tuple[int, int] | None:
    """The uid and gid of the ``dokuen`` account that ``git push dokuen@HOST:APP`` logs in
    as, when dokuend runs as root and that account exists: it must write the apps'
    repositories and read authorized_keys. None otherwise (everything is dokuend's own)."""
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    return (account.pw_uid, account.pw_gid) if account.pw_uid != 0 else None


def client_socket(environ: Mapping[str, str], home: Path | None) -> Path:
    """The socket dokuenctl talks to: the one of ``--home``, ``DOKUEN_HOME`` or
    ``DOKUEN_SOCKET`` when given; else the user's own, or, when the user has none, the
    system service's (so the dokuen user's ssh commands and the dokuen group's members
    reach it without being told where it is)."""
    own = home_and_socket(environ, home)[1]
    if home or environ.get("DOKUEN_HOME") or environ.get("DOKUEN_SOCKET"):
        return own
    return default_socket(own, os.path.exists)


def default_socket(own: Path, exists: Callable[[Path], bool]) -> Path:
    """``own`` if it exists or the system service's does not, else the service's."""
    return SERVICE_SOCKET if not exists(own) and exists(SERVICE_SOCKET) else own
