"""The daemon's shared services that every app uses, in one frozen record."""

import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import anyio

from dokuen.deploy.build import Builder
from dokuen.isolate.cgroups import Cgroups
from dokuen.isolate.isolation import OFF, Isolation
from dokuen.settings import Settings
from dokuen.supervise.clock import Clock
from dokuen.supervise.keeper import Keeper
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.ports import PortPool
from dokuen.supervise.process import Spawner


@dataclass(frozen=True)
class Runtime:
    """The daemon's shared services that every app uses."""

    settings: Settings
    ports: PortPool
    mux: LogMux
    spawner: Spawner
    clock: Clock
    proxy_changed: Callable[[], None] = lambda: None  # a web process came, went or moved
    proxy_sync: Callable[[], Awaitable[None]] = anyio.lowlevel.checkpoint  # nginx caught up
    proxied: bool = False  # nginx is in front: web processes are health-checked and swapped
    # Holds one app's nginx changes until the batch ends (proxy/driver.py).
    proxy_batch: Callable[[str], AbstractAsyncContextManager[None]] = lambda _app: (
        contextlib.nullcontext()
    )
    builder: Builder | None = None  # None: a daemon of fakes, which cannot build
    cgroups: Cgroups | None = None  # None: no cgroups (status says why)
    keeper: Keeper | None = None  # FIFOs and records, so processes outlive a dokuend
    isolation: Isolation = OFF  # which uid each app runs as (decided when dokuend starts)
