"""Is a new web process serving yet? A TCP connect, or an HTTP GET that answers 2xx/3xx,
from a listener that is the process's own (isolate/listeners.py): a port someone else
bound first is never taken for the app's."""

import asyncio
import re
import socket
from dataclasses import dataclass

import anyio

from dokuen.errors import SettingsError
from dokuen.isolate.listeners import prove

_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")
PROBE_TIMEOUT = 2.0
POLL = 0.05  # seconds between probes of a new process, at most
FIRST_POLL = 0.005  # the first wait: doubled after each probe up to POLL (a refused
# connect on loopback costs microseconds, a web process is often up within 0.1 s)


@dataclass(frozen=True)
class HealthCheck:
    path: str | None  # None: a TCP connect is enough
    timeout: float  # seconds the new process has to pass

    def describe(self) -> str:
        return f"GET {self.path}" if self.path else "a TCP connect"


def check_path(text: str) -> str:
    """The app config var DOKUEN_HEALTHCHECK_PATH: an absolute URL path, nothing else."""
    if not _PATH.fullmatch(text) or len(text) > 1024:
        raise SettingsError(f"DOKUEN_HEALTHCHECK_PATH={text!r} is not a URL path like /health")
    return text


async def probe(port: int, path: str | None) -> bool:
    """One attempt: True when 127.0.0.1:port accepts (and answers ``path`` with 2xx/3xx).
    On the loop's own sockets: anyio's ``connect_tcp`` imports ``ssl`` (readiness.py)."""
    loop = asyncio.get_running_loop()
    head = b""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        try:
            with anyio.fail_after(PROBE_TIMEOUT):
                await loop.sock_connect(sock, ("127.0.0.1", port))
                if path is None:
                    return True
                request = f"GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: dokuen\r\n\r\n"
                await loop.sock_sendall(sock, request.encode())
                while b"\r\n" not in head and len(head) < 4096:
                    chunk = await loop.sock_recv(sock, 4096)
                    if not chunk:
                        return False
                    head += chunk
        except (OSError, TimeoutError):
            return False
    status = head.split(b"\r\n", 1)[0].split()
    return len(status) >= 2 and status[1][:1] in (b"2", b"3")


async def serving(
    health: HealthCheck, port: int, leader: int, name: str, uid: int | None = None
) -> str | None:
    """Probe process ``name`` (started as pid ``leader``, as the app's ``uid`` when apps
    have their own) on ``port`` until it answers from a listener it holds: then None.
    Otherwise why not: at once when another process holds the port (``port 5012 is held by
    pid 4242 (not web.1's)``), else once ``health.timeout`` has passed."""
    unproven = ""
    pause = FIRST_POLL
    with anyio.move_on_after(health.timeout):
        while True:
            if await probe(port, health.path):
                # Only after an answer: looking for the holder reads every process's fds.
                proof = await anyio.to_thread.run_sync(prove, port, leader, name, uid)
                if proof.owned:
                    return None
                if proof.final:
                    return proof.reason
                unproven = f" ({proof.reason})"
            await anyio.sleep(pause)
            pause = min(pause * 2, POLL)
    waited = f"within {health.timeout:g}s{unproven}"
    return f"did not answer {health.describe()} on port {port} {waited}"
