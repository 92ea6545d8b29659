"""The port is the app's: who holds the socket that listens on a process's PORT.

A port dokuend hands out is free when it is handed out, but anyone on the machine may bind
it before the app does, and would then get the app's traffic. So a health check passes
only when every socket that would take a connection to ``127.0.0.1:PORT`` is held by the
process dokuend started, or by a process that came from it: its session (no other process
can join a session), its descendants, or, once apps have uids of their own, its uid.

On Linux: the listening sockets' inodes from ``/proc/net/tcp`` and ``/proc/net/tcp6``,
then the processes whose ``/proc/PID/fd`` hold those inodes. Elsewhere psutil does both.
"""

import contextlib
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

_LISTEN = "0A"  # the TCP state in /proc/net/tcp
# Addresses whose listener takes a connection to 127.0.0.1 (:: is dual-stack unless the
# socket set IPV6_V6ONLY, which /proc does not say: counted, to be safe). v4-mapped IPv6
# addresses are compared as the IPv4 address they map.
_REACHING = {"127.0.0.1", "0.0.0.0", "::"}
_PROC = Path("/proc")


@dataclass(frozen=True)
class Listener:
    """A listening socket: its inode (the ``socket:[N]`` its holders' fds point at) and the
    uid that made it."""

    inode: int
    uid: int


@dataclass(frozen=True)
class Proof:
    """Whether a port is proven to be a process's own; if not, why, and whether waiting
    could change that (``final``: another process holds it)."""

    owned: bool
    reason: str = ""
    final: bool = False


def parse_listeners(text: str, port: int, *, v6: bool) -> list[Listener]:
    """The sockets in a ``/proc/net/tcp`` (``v6``: ``tcp6``) table that listen on ``port``
    at an address that takes connections to 127.0.0.1."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        address, _, hex_port = fields[1].partition(":")
        if int(hex_port, 16) == port and _address(address, v6=v6) in _REACHING:
            found.append(Listener(int(fields[9]), int(fields[7])))
    return found


def _address(text: str, *, v6: bool) -> str:
    """An address as /proc prints it: 32-bit words in the machine's byte order."""
    raw = bytes.fromhex(text)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if not v6:
        return str(ipaddress.IPv4Address(raw))
    address = ipaddress.IPv6Address(raw)
    # A v4-mapped address (::ffff:127.0.0.1) is the IPv4 address it maps.
    return str(address.ipv4_mapped or address)


def listeners_on(port: int) -> list[Listener]:
    """The listening sockets on ``port`` that take connections to 127.0.0.1."""
    found = []
    for name, v6 in (("tcp", False), ("tcp6", True)):
        with contextlib.suppress(FileNotFoundError):  # no IPv6 on this machine
            text = (_PROC / "net" / name).read_text(encoding="ascii")
            found += parse_listeners(text, port, v6=v6)
    return found


def holders(inodes: set[int]) -> dict[int, set[int]]:
    """For each socket inode, the pids whose open files include it (of the processes this
    process may look into: all of them as root)."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    found: dict[int, set[int]] = {inode: set() for inode in inodes}
    for pid in os.listdir(_PROC):
        if not pid.isdigit():
            continue
        directory = f"{_PROC}/{pid}/fd"
        try:
            fds = os.listdir(directory)
        except OSError:  # gone, or not ours to look into
            continue
        for fd in fds:
            try:
                inode = wanted.get(os.readlink(f"{directory}/{fd}"))
            except OSError:  # closed meanwhile
                continue
            if inode is not None:
                found[inode].add(int(pid))
    return found


def belongs_to(pid: int, leader: int, uid: int | None = None) -> bool:
    """True when process ``pid`` is ``leader``, in its session (only its descendants can
    be: a session is joined by fork alone), below it in the process tree, or runs as
    ``uid`` (the app's own, when apps have one)."""
    if pid == leader:
        return True
    try:
        if os.getsid(pid) == leader:
            return True
        process = psutil.Process(pid)
        if uid is not None and process.uids().real == uid:
            return True
        return any(parent.pid == leader for parent in process.parents())
    except (OSError, psutil.Error):
        return False


def prove(port: int, leader: int, name: str, uid: int | None = None) -> Proof:
    """Is ``port`` the own of process ``name`` (started as pid ``leader``)?

    Owned when something listens on it for 127.0.0.1 and every listening socket there is
    held by processes that ``belongs_to`` the leader. A socket held by any other process
    is a final no, naming the holder: ``port 5012 is held by pid 4242 (not web.1's)``.
    """
    found = listeners_on(port) if (_PROC / "net" / "tcp").exists() else _psutil_listeners(port)
    if not found:
        return Proof(False, f"nothing listens on port {port}")
    held = holders({listener.inode for listener in found}) if found[0].inode else {}
    for listener in found:
        pids = held.get(listener.inode) or _psutil_holders(port, listener)
        strangers = sorted(pid for pid in pids if not belongs_to(pid, leader, uid))
        if strangers:
            return Proof(False, f"port {port} is held by pid {strangers[0]} (not {name}'s)", True)
        if not pids:
            # Not one process we may look into holds it: another user's, when we are not root.
            if listener.uid >= 0 and listener.uid not in (os.geteuid(), uid):
                return Proof(
                    False, f"port {port} is held by uid {listener.uid} (not {name}'s)", True
                )
            return Proof(False, f"port {port} is held by a process dokuend cannot see")
    return Proof(True)


def _psutil_listeners(port: int) -> list[Listener]:
    """Where there is no /proc/net (macOS): a listener per listening socket, with no inode
    and no uid known."""
    return [
        Listener(0, -1)
        for connection in psutil.net_connections("tcp")
        if connection.status == psutil.CONN_LISTEN
        and connection.laddr
        and connection.laddr.port == port
        and _reaches(connection.laddr.ip)
    ]


def _reaches(ip: str) -> bool:
    address = ipaddress.ip_address(ip.partition("%")[0])
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return str(mapped or address) in _REACHING


def _psutil_holders(port: int, listener: Listener) -> set[int]:
    if listener.inode:
        return set()
    return {
        connection.pid
        for connection in psutil.net_connections("tcp")
        if connection.status == psutil.CONN_LISTEN
        and connection.laddr
        and connection.laddr.port == port
        and connection.pid is not None
    }
