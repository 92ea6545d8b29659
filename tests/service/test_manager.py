"""Which service manager runs dokuend, what it takes out of the environment, and what the
daemon tells it."""

import socket
from pathlib import Path

import anyio
import pytest

from dokuen.service.manager import ServiceManager, detect_manager
from dokuen.service.notify import NotifySocket


@pytest.mark.parametrize(
    ("environ", "parent", "platform", "manager"),
    [
        ({}, "bash", "linux", "none"),
        ({"NOTIFY_SOCKET": "/run/systemd/notify"}, "systemd", "linux", "systemd"),
        ({"INVOCATION_ID": "abc"}, "systemd", "linux", "systemd"),  # Type=simple
        # A terminal that is a systemd user service passes INVOCATION_ID to its shells.
        ({"INVOCATION_ID": "abc"}, "bash", "linux", "none"),
        ({"XPC_SERVICE_NAME": "com.dokuen.dokuend"}, "launchd", "darwin", "launchd"),
        ({}, "launchd", "darwin", "launchd"),
        ({"XPC_SERVICE_NAME": "0"}, "zsh", "darwin", "none"),  # macOS's Terminal sets 0
        ({"XPC_SERVICE_NAME": "com.x"}, "launchd", "linux", "none"),
    ],
)
def test_detect_manager(environ: dict[str, str], parent: str, platform: str, manager: str) -> None:
    assert detect_manager(environ, parent, platform) == manager


def test_what_the_service_manager_passed_is_taken_out_of_the_environment() -> None:
    environ = {
        "PATH": "/usr/bin",
        "NOTIFY_SOCKET": "@dokuen-test",
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": "1",  # not ours: no pings
        "LISTEN_PID": "1",
        "LISTEN_FDS": "1",
        "LISTEN_FDNAMES": "x",
        "INVOCATION_ID": "abc",
    }
    service = ServiceManager.from_environ(environ)
    assert environ == {"PATH": "/usr/bin"}
    assert service.info() == {"manager": "systemd", "notify": True, "watchdog": None}


def test_started_by_hand_it_tells_nobody() -> None:
    service = ServiceManager.from_environ({"PATH": "/usr/bin"})
    assert service.info() == {"manager": "none", "notify": False, "watchdog": None}
    service.ready("0 apps")  # no socket: nothing happens
    service.stopping()


def test_ready_reloading_stopping(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notify = NotifySocket(path)
    service = ServiceManager("systemd", notify)
    service.ready("1 app, 2/2 processes running")
    service.reloading()
    service.stopping()
    notify.close()
    assert sock.recv(4096) == b"READY=1\nSTATUS=1 app, 2/2 processes running"
    reloading = sock.recv(4096).decode().split("\n")
    assert reloading[0] == "RELOADING=1"
    assert reloading[1].startswith("MONOTONIC_USEC=")
    assert reloading[1][15:].isdigit()
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping every app"


@pytest.mark.anyio
async def test_the_watchdog_pings_from_the_event_loop(
    receiver: tuple[socket.socket, str],
) -> None:
    sock, path = receiver
    notify = NotifySocket(path)
    service = ServiceManager("systemd", notify, watchdog=0.03)
    # Linux queues 10 datagrams (net.unix.max_dgram_qlen) for a receiver that does not read.
    with anyio.move_on_after(0.2):
        await service.keep_alive()
    notify.close()
    sock.settimeout(0)
    pings = []
    while True:
        try:
            pings.append(sock.recv(4096))
        except BlockingIOError:
            break
    assert set(pings) == {b"WATCHDOG=1"}
    assert 3 <= len(pings) <= 10


@pytest.mark.anyio
async def test_without_a_watchdog_keep_alive_returns_at_once(tmp_path: Path) -> None:
    with anyio.fail_after(1):
        await ServiceManager("systemd", NotifySocket(str(tmp_path / "x"))).keep_alive()  # unsent
        await ServiceManager().keep_alive()
        await ServiceManager().report_status(lambda: "never asked")
