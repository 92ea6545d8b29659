"""The service's account: the ``dokuen`` user that owns the state, and its group, whose
members may use the control socket."""

import grp
import os

SERVICE_USER = "dokuen"
SERVICE_GROUP = "dokuen"


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
