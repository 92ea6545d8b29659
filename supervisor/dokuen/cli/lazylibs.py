"""What dokuend's libraries import at their top but the daemon needs only on demand:
``ssl`` (loaded on first use), ``bz2`` and ``lzma`` (by whatever reads such archives).

``ssl`` links libssl and libcrypto: 4 MiB resident for the daemon's whole life
(docs/benchmarks.md, workload 3), and dokuend opens no TLS connection of its own at start
or at idle (nginx ends TLS; the ACME client and S3 import ``ssl`` themselves, when an order
or a backup needs them). Two of the daemon's libraries import it at their top anyway:

- asyncio (``try: import ssl``) gets None: its TLS transports, which dokuend does not use,
  say "stdlib ssl module not available"; they never run without TLS.
- anyio's asyncio backend imports its sockets module, whose TLS streams do ``import ssl``
  and ``from ssl import SSLContext`` (for annotations). They get :class:`SslOnDemand`:
  every attribute is the real module's, imported when first asked for, so anyio's TLS
  works, just later.

Once these are imported, ``sys.modules`` no longer names a stand-in: whoever imports ``ssl``
afterwards gets the real module.

``shutil`` imports ``bz2`` and ``lzma`` (and their libraries) only to know whether
``make_archive`` may offer ``bztar`` and ``xztar``, which dokuend never asks it for: 0.4
MiB. It is imported while they are kept out; ``tarfile`` still imports them when an archive
needs them.
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
    stand_in = SslOnDemand("ssl", "ssl, imported on first use (dokuen.cli.lazylibs)")
    stand_in.__dict__["SSLContext"] = _StartingSSLContext
    sys.modules["ssl"] = stand_in
    try:
        # What anyio.run imports; its TLS module imports ssl at its top.
        import anyio._backends._asyncio  # noqa: F401, PLC0415
    finally:
        del sys.modules["ssl"]
        del stand_in.__dict__["SSLContext"]  # from now on, the real class


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
