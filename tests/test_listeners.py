"""isolate/listeners.py: the /proc/net/tcp tables as data, then real listeners held by real
processes: the port is proven only for the process that holds it (or its descendants)."""

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dokuen.isolate.listeners import Listener, belongs_to, parse_listeners, prove

HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
    "   uid  timeout inode\n"
)


def row(address: str, port: int, state: str, uid: int, inode: int) -> str:
    return (
        f"   0: {address}:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 "
        f"00000000 {uid:5d}        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
    )


@pytest.mark.skipif(sys.byteorder != "little", reason="the table below is written for x86")
def test_parse_listeners_keeps_listeners_that_take_127_0_0_1_on_the_port() -> None:
    v4 = HEADER + "".join(
        [
            row("0100007F", 5012, "0A", 0, 101),  # 127.0.0.1: yes
            row("00000000", 5012, "0A", 65534, 102),  # 0.0.0.0: yes
            row("0200007F", 5012, "0A", 0, 103),  # 127.0.0.2: another address
            row("0500000A", 5012, "0A", 0, 104),  # 10.0.0.5
            row("0100007F", 5013, "0A", 0, 105),  # another port
            row("0100007F", 5012, "01", 0, 106),  # an established connection
        ]
    )
    assert parse_listeners(v4, 5012, v6=False) == [Listener(101, 0), Listener(102, 65534)]
    v6 = HEADER + "".join(
        [
            row("00000000000000000000000000000000", 5012, "0A", 1000, 201),  # ::
            row("0000000000000000FFFF00000100007F", 5012, "0A", 1000, 202),  # ::ffff:127.0.0.1
            row("00000000000000000000000001000000", 5012, "0A", 1000, 203),  # ::1
        ]
    )
    assert parse_listeners(v6, 5012, v6=True) == [Listener(201, 1000), Listener(202, 1000)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


LISTEN = """
import os, socket, sys, time
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
if sys.argv[2] == "fork" and os.fork() != 0:  # the child keeps it; its parent lets go
    server.close()
    time.sleep(60)
    sys.exit()
print("listening", flush=True)
time.sleep(60)
"""


def listening(port: int, *prefix: str, fork: bool = False) -> subprocess.Popen[str]:
    """A process (in its own session) that listens on 127.0.0.1:port, run through ``prefix``
    (setpriv to be another user)."""
    process = subprocess.Popen(
        [*prefix, sys.executable, "-c", LISTEN, str(port), "fork" if fork else "-"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "listening\n"
    return process


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[Any]]]:
    started: list[subprocess.Popen[Any]] = []
    yield started
    for process in started:
        os.killpg(process.pid, 9)
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_nothing_listening_is_not_proven_yet() -> None:
    port = free_port()
    proof = prove(port, os.getpid(), "web.1")
    assert (proof.owned, proof.final) == (False, False)
    assert proof.reason == f"nothing listens on port {port}"


def test_a_listener_of_the_process_itself_or_its_tree_is_proven(
    processes: list[subprocess.Popen[Any]],
) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert prove(server.getsockname()[1], os.getpid(), "web.1").owned
    port = free_port()
    processes.append(listening(port, fork=True))  # held by the leader and its child
    assert prove(port, processes[0].pid, "web.1").owned


def test_a_listener_held_by_another_process_is_a_final_no_naming_it(
    processes: list[subprocess.Popen[Any]],
) -> None:
    port = free_port()
    squatter = listening(port)
    processes.append(squatter)
    app = subprocess.Popen(["sleep", "60"], start_new_session=True)
    processes.append(app)
    proof = prove(port, app.pid, "web.1")
    assert (proof.owned, proof.final) == (False, True)
    assert proof.reason == f"port {port} is held by pid {squatter.pid} (not web.1's)"
    assert not belongs_to(squatter.pid, app.pid)
    assert belongs_to(squatter.pid, os.getpid())  # our own child: below us in the tree


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_a_listener_of_another_user_is_named(
    processes: list[subprocess.Popen[Any]], tmp_path: Path
) -> None:
    port = free_port()
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    squatter = listening(port, *nobody)
    processes.append(squatter)
    proof = prove(port, os.getpid() + 10**6, "web.1")  # a leader that is nobody's
    assert proof.final
    assert proof.reason == f"port {port} is held by pid {squatter.pid} (not web.1's)"
    # Its uid is the app's: then it is the app's (apps with uids of their own).
    assert prove(port, os.getpid() + 10**6, "web.1", uid=65534).owned
