"""What dokuend's libraries import at their top but the daemon needs only on demand:
``ssl`` (loaded on first use), ``bz2`` and ``lzma`` (by whatever reads such archives).

``ssl`` links libssl and libcrypto: 4 MiB resident for the daemon's whole life
(docs/benchmarks.md, workload 3), and dokuend opens no TLS connection of its own at start
or at idle (nginx ends TLS; the ACME client and S3 import ``ssl`` themselves, when an order
or a backup needs them). Two of the daemon's libraries import it at their top anyway:

- asyncio (``try: import ssl``) gets None: its TLS transports, which dokuend does not use,
  say "stdlib ssl module not available"; they never run without TLS.
- anyio's asyncio backend imports its sockets module for one helper
  (``convert_ipv6_sockaddr``, which only its UDP sockets call), and that module imports
  anyio's TLS and stapled streams, which import ``ssl`` at their top. The backend is
  imported with :class:`SocketsOnDemand` standing for that module: its one helper imports
  the real module at its first call (a UDP datagram; dokuend opens no UDP socket through anyio), and
  whoever imports ``anyio._core._sockets`` afterwards gets the real module, ``ssl`` and all.

Once these are imported, ``sys.modules`` names no stand-in: whoever imports ``ssl`` or
anyio's sockets module afterwards gets the real one (0.2-0.3 MiB kept out of a daemon that
never does: anyio's sockets, TLS, stapled and resource modules).

``shutil`` imports ``bz2`` and ``lzma`` (and their libraries) only to know whether
``make_archive`` may offer ``bztar`` and ``xztar``, which dokuend never asks it for: 0.4
MiB. It is imported while they are kept out; ``tarfile`` still imports them when an archive
needs them.
"""

import importlib
import sys
import types
from typing import Any

SOCKETS = "anyio._core._sockets"


def _convert_ipv6_sockaddr(sockaddr: Any) -> Any:
    """anyio's own, from its sockets module, imported by the first call."""
    sockets = importlib.import_module(SOCKETS)
    return sockets.convert_ipv6_sockaddr(sockaddr)


class SocketsOnDemand(types.ModuleType):
    """Stands for anyio's sockets module while its asyncio backend is imported. Any other
    name an anyio release takes from it brings the real module in at once (and ``ssl``):
    a newer anyio costs that memory, never a dokuend that cannot start."""

    convert_ipv6_sockaddr = staticmethod(_convert_ipv6_sockaddr)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # the import system's questions (``__path__``): not a name
            raise AttributeError(name)
        if sys.modules.get(SOCKETS) is self:
            del sys.modules[SOCKETS]
        return getattr(importlib.import_module(SOCKETS), name)


def import_without_ssl() -> None:
    """Import asyncio and anyio's asyncio backend without loading ``ssl`` or anyio's
    sockets module, unless something already did."""
    if "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import asyncio  # noqa: F401, PLC0415 (its modules keep ssl = None)
    finally:
        del sys.modules["ssl"]
    if SOCKETS in sys.modules or "anyio._backends._asyncio" in sys.modules:
        return
    stand_in = SocketsOnDemand(SOCKETS, "anyio's sockets module, imported on first use")
    sys.modules[SOCKETS] = stand_in
    try:
        # What anyio.run imports; its sockets module imports its TLS streams, and ssl.
        import anyio._backends._asyncio  # noqa: F401, PLC0415
    finally:
        if sys.modules.get(SOCKETS) is stand_in:
            del sys.modules[SOCKETS]


def import_shutil_alone() -> None:
    """Import ``shutil`` without ``bz2`` and ``lzma``, unless something already did."""
    if "shutil" in sys.modules:
        return
    kept_out = [name for name in ("bz2", "lzma") if name not in sys.modules]
    for name in kept_out:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import shutil  # noqa: F401, PLC0415
    finally:
        for name in kept_out:
            del sys.modules[name]
