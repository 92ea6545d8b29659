"""Is a new web process serving yet? A TCP connect, or an HTTP GET that answers 2xx/3xx."""

import re
from dataclasses import dataclass

import anyio

from dokuen.errors import SettingsError

_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")
PROBE_TIMEOUT = 2.0


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
    """One attempt: True when 127.0.0.1:port accepts (and answers ``path`` with 2xx/3xx)."""
    try:
        with anyio.fail_after(PROBE_TIMEOUT):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                if path is None:
                    return True
                request = f"GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: dokuen\r\n\r\n"
                await stream.send(request.encode())
                head = b""
                while b"\r\n" not in head and len(head) < 4096:
                    head += await stream.receive()
    except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
        return False
    status = head.split(b"\r\n", 1)[0].split()
    return len(status) >= 2 and status[1][:1] in (b"2", b"3")
