"""The port pool: one free 127.0.0.1 port per live process, verified by binding."""

import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from dokuen.errors import DokuenError
from dokuen.settings import PortRange

HOST = "127.0.0.1"


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port. SO_REUSEADDR makes a port whose old
    connections linger in TIME_WAIT count as free, as it is for servers that set it too."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def choose_port(
    ports: PortRange,
    taken: set[int] | frozenset[int],
    preferred: int | None,
    cursor: int,
    is_free: Callable[[int], bool],
) -> int | None:
    """Pick a port: ``preferred`` when it is in range, not taken and free; otherwise the first
    free one scanning from ``cursor`` round the range (so a port just released is the last to
    be handed out again). None when every port is taken or busy."""
    if (
        preferred is not None
        and preferred in ports
        and preferred not in taken
        and is_free(preferred)
    ):
        return preferred
    size = len(ports)
    for step in range(size):
        port = ports.first + (cursor - ports.first + step) % size
        if port not in taken and is_free(port):
            return port
    return None


@dataclass
class PortPool:
    """Hands out ports so that no two live processes ever share one."""

    ports: PortRange
    is_free: Callable[[int], bool] = port_is_free
    taken: set[int] = field(default_factory=set)
    _cursor: int = 0

    def allocate(self, preferred: int | None = None) -> int:
        """Reserve a port, ``preferred`` if possible. Raises DokuenError when none is free."""
        port = choose_port(
            self.ports, self.taken, preferred, self._cursor or self.ports.first, self.is_free
        )
        if port is None:
            raise DokuenError(
                f"no free port in {self.ports.first}-{self.ports.last} "
                "(widen DOKUEN_PORT_RANGE or scale something down)"
            )
        self.taken.add(port)
        if port != preferred:
            self._cursor = port + 1 if port < self.ports.last else self.ports.first
        return port

    def release(self, port: int) -> None:
        self.taken.discard(port)
