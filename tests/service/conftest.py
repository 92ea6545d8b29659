"""Fixtures of the service tests."""

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """systemd's end of sd_notify: a bound datagram socket and its path."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        yield sock, path
