"""Who reaches the service: the socket's group, and where dokuenctl looks for dokuend."""

import grp
from pathlib import Path

import pytest

from dokuen.service.account import SERVICE_SOCKET, client_socket, default_socket, socket_group

OWN = Path("/home/ada/.local/share/dokuen/dokuend.sock")


@pytest.mark.parametrize(
    ("present", "socket"),
    [
        ({OWN, SERVICE_SOCKET}, OWN),  # a dokuend of one's own comes first
        ({SERVICE_SOCKET}, SERVICE_SOCKET),  # else the system service's
        (set(), OWN),  # neither: the error names one's own
    ],
)
def test_without_being_told_dokuenctl_finds_the_service(present: set[Path], socket: Path) -> None:
    assert default_socket(OWN, lambda path: path in present) == socket


@pytest.mark.parametrize(
    ("environ", "home", "socket"),
    [
        ({"DOKUEN_HOME": "/srv/d"}, None, "/srv/d/dokuend.sock"),
        ({"DOKUEN_SOCKET": "/run/d.sock"}, None, "/run/d.sock"),
        ({}, Path("/srv/d"), "/srv/d/dokuend.sock"),
    ],
)
def test_told_where_it_goes_there(environ: dict[str, str], home: Path | None, socket: str) -> None:
    assert client_socket(environ, home) == Path(socket)


def test_without_a_dokuen_group_the_socket_stays_private() -> None:
    try:
        grp.getgrnam("dokuen")
        pytest.skip("this machine has a dokuen group")
    except KeyError:
        assert socket_group() is None
