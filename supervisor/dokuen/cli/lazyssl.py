"""``ssl`` for dokuend, loaded on first use rather than at start.

``ssl`` links libssl and libcrypto: 4 MiB resident for the daemon's whole life
(docs/benchmarks.md, workload 3), and dokuend opens no TLS connection of its own at start
or at idle (nginx ends TLS; the ACME client and S3 import ``ssl`` themselves, when an order
or a backup needs them). Two of the daemon's libraries import it at their top anyway:

- asyncio (``try: import ssl``) gets None: its TLS transports, which dokuend does not use,
  say "ssl module is not available"; they never run without TLS.
- anyio's asyncio backend imports its sockets module, whose TLS streams do ``import ssl``
  and ``from ssl import SSLContext`` (for annotations). They get :class:`SslOnDemand`:
  every attribute is the real module's, imported when first asked for, so anyio's TLS
  works, just later.

Once these are imported, ``sys.modules`` no longer names a stand-in: whoever imports ``ssl``
afterwards gets the real module.
"""

import importlib
import sys
import types
from typing import Any


class SslOnDemand(types.ModuleType):
    """Stands for ``ssl`` in the modules that imported it while dokuend started."""

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get("ssl") is self:  # still starting: the real one is not wanted yet
            raise AttributeError(f"ssl.{name} asked for while dokuend starts")
        return getattr(importlib.import_module("ssl"), name)


class _StartingSSLContext:
    """What ``from ssl import SSLContext`` gives while dokuend starts (anyio's TLS module
    names it only in annotations); replaced by the real class right after."""


def import_without_ssl() -> None:
    """Import asyncio and anyio's asyncio backend without loading ``ssl``, unless something
    already did."""
    if "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import asyncio  # noqa: F401, PLC0415 (its modules keep ssl = None)
    finally:
        del sys.modules["ssl"]
    stand_in = SslOnDemand("ssl", "ssl, imported on first use (dokuen.cli.lazyssl)")
    stand_in.__dict__["SSLContext"] = _StartingSSLContext
    sys.modules["ssl"] = stand_in
    try:
        # What anyio.run imports; its TLS module imports ssl at its top.
        import anyio._backends._asyncio  # noqa: F401, PLC0415
    finally:
        del sys.modules["ssl"]
        del stand_in.__dict__["SSLContext"]  # from now on, the real class
