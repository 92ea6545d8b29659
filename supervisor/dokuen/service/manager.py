"""The service manager that runs dokuend (systemd, launchd, or none: started by hand), as
the daemon talks to it: readiness, status, reloads and stops over sd_notify, and the
watchdog pings from the event loop itself, so a stuck loop stops them and gets restarted."""

import os
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping

import anyio
import psutil

from dokuen.events import get_logger
from dokuen.service.notify import (
    SERVICE_VARIABLES,
    NotifySocket,
    parse_address,
    watchdog_interval,
)

log = get_logger()

STATUS_INTERVAL = 5.0  # seconds between STATUS= updates (sent only when the text changed)


def detect_manager(environ: Mapping[str, str], parent: str, platform: str) -> str:
    """``systemd``, ``launchd`` or ``none``, from our environment and our parent's name.

    ``INVOCATION_ID`` alone is not enough: a terminal that is itself a systemd user service
    passes it to everything started in it. macOS's Terminal sets ``XPC_SERVICE_NAME=0``."""
    if environ.get("NOTIFY_SOCKET") or (environ.get("INVOCATION_ID") and parent == "systemd"):
        return "systemd"
    if platform == "darwin" and (
        environ.get("XPC_SERVICE_NAME", "0") != "0" or parent == "launchd"
    ):
        return "launchd"
    return "none"


def _parent_name() -> str:
    try:
        return psutil.Process(os.getppid()).name()
    except psutil.Error:
        return ""


class ServiceManager:
    """What dokuend tells its service manager. Without ``NOTIFY_SOCKET`` every call is a
    no-op, so the daemon calls them unconditionally."""

    def __init__(
        self,
        name: str = "none",
        notify: NotifySocket | None = None,
        watchdog: float | None = None,
    ) -> None:
        self.name = name
        self._notify = notify
        self.watchdog = watchdog if notify is not None else None
        self._status = ""
        self.passed: dict[str, str] = {}

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str]) -> "ServiceManager":
        """Read what the service manager passed and take it out of ``environ`` (normally
        ``os.environ``), so no child of dokuend (an app, nginx, a build) inherits it."""
        name = detect_manager(environ, _parent_name(), sys.platform)
        notify, watchdog = None, None
        if environ.get("NOTIFY_SOCKET"):
            try:
                notify = NotifySocket(parse_address(environ["NOTIFY_SOCKET"]))
            except ValueError as exc:
                log.warning("notify.unsupported", error=str(exc))
            watchdog = watchdog_interval(environ, os.getpid())
        passed = {key: environ.pop(key) for key in SERVICE_VARIABLES if key in environ}
        manager = cls(name, notify, watchdog)
        manager.passed = passed  # a re-exec of dokuend hands them to the new image
        return manager

    def info(self) -> dict[str, object]:
        """For ``dokuenctl status``."""
        return {"manager": self.name, "notify": self._notify is not None, "watchdog": self.watchdog}

    def _send(self, **fields: str) -> None:
        if self._notify is not None:
            self._notify.send(fields)

    def ready(self, status: str) -> None:
        """Every app is restored (or the reload is done)."""
        self._status = status
        self._send(READY="1", STATUS=status)

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd's Type=notify-reload (v253+) match it to its SIGHUP.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(RELOADING="1", MONOTONIC_USEC=str(usec), STATUS="reloading settings")

    def stopping(self, status: str = "stopping every app") -> None:
        self._send(STOPPING="1", STATUS=status)

    async def keep_alive(self) -> None:
        """Send ``WATCHDOG=1`` every half watchdog period until cancelled; return at once
        when there is no watchdog."""
        if self.watchdog is None:
            return
        while True:
            self._send(WATCHDOG="1")
            await anyio.sleep(self.watchdog)

    async def report_status(self, status: Callable[[], str]) -> None:
        """Send ``STATUS=`` whenever ``status()`` says something new, every few seconds."""
        if self._notify is None:
            return
        while True:
            await anyio.sleep(STATUS_INTERVAL)
            text = status()
            if text != self._status:
                self._status = text
                self._send(STATUS=text)
