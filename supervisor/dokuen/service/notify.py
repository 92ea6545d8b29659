"""sd_notify without libsystemd: the protocol's pure half and a tiny sender.

systemd passes ``NOTIFY_SOCKET``: a datagram socket, a file path or, starting with ``@``, a
name in Linux's abstract namespace. Each message is one datagram of ``KEY=VALUE`` lines
(``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``RELOADING=1``, ``STOPPING=1``). See
sd_notify(3) and systemd's "Notify socket" protocol description.
"""

import re
import socket
from collections.abc import Mapping

from dokuen.events import get_logger

log = get_logger()

# What a service manager hands its service about itself; none of it is for the apps, and
# children would take NOTIFY_SOCKET as theirs (sd_notify's unset_environment convention).
SERVICE_VARIABLES = (
    "INVOCATION_ID",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
)
_KEY = re.compile(r"[A-Z_][A-Z0-9_]*")
Address = str | bytes  # a path, or an abstract name (bytes starting with NUL)


def parse_address(text: str) -> Address:
    """The socket address in ``NOTIFY_SOCKET``: ``/run/systemd/notify`` as it is,
    ``@name`` as the abstract ``b"\\0name"``. Raises ValueError for anything else (a
    relative path; ``vsock:`` addresses, which dokuend does not speak)."""
    if text.startswith("@") and len(text) > 1:
        return b"\0" + text[1:].encode()
    if text.startswith("/"):
        return text
    raise ValueError(f"NOTIFY_SOCKET={text!r} is neither an absolute path nor an @abstract name")


def format_message(fields: Mapping[str, str]) -> bytes:
    """One datagram: ``KEY=VALUE`` lines. Raises ValueError for a bad key or a value with a
    newline (it would start a field of its own)."""
    lines = []
    for key, value in fields.items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"invalid sd_notify field name {key!r}")
        if "\n" in value:
            raise ValueError(f"sd_notify field {key} has a newline in its value")
        lines.append(f"{key}={value}")
    return "\n".join(lines).encode()


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3)
    advises. None when there is no watchdog, or it is another process's (``WATCHDOG_PID``)."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isascii() or not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(pid):
        return None
    return int(usec) / 2 / 1_000_000


class NotifySocket:
    """Sends datagrams to the service manager's socket, never blocking the event loop: a
    message that cannot go at once (the manager's queue is full, or it went away) is
    logged and dropped, as sd_notify's callers ignore its failures."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._failed = False

    def send(self, fields: Mapping[str, str]) -> bool:
        """Send one message; True when it went."""
        message = format_message(fields)
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:  # once, not at every watchdog ping
                log.warning("notify.failed", address=repr(self.address), error=str(exc))
            self._failed = True
            return False
        self._failed = False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
