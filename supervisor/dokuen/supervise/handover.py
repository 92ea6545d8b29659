"""The supervisor's half of a re-exec (``daemon:reload``, SIGUSR2): refuse while a deploy
runs, try the new program, then stop reading the apps' FIFOs, let the log writer catch up
and ``execve`` (reexec.py). Whatever the apps write meanwhile waits in their FIFOs for the
new image, which adopts them (keeper.py): not one line is lost or written twice."""

import contextlib
import os
import socket
from collections.abc import Callable

import anyio
import anyio.abc

from dokuen import reexec
from dokuen.control import INHERITED_FD
from dokuen.errors import DokuenError, explain
from dokuen.events import get_logger
from dokuen.supervise import handed
from dokuen.supervise.keeper import Keeper
from dokuen.supervise.logmux import LogMux

log = get_logger()

SETTLE = 0.01  # seconds for every pump to hand the log what it has read
REPLY = 0.05  # seconds for the reply to reach the client before the socket goes


class Handover:
    """What the daemon hands to the next image of itself, and when."""

    def __init__(
        self,
        keeper: Keeper | None,
        mux: LogMux,
        environ: Callable[[], dict[str, str]],
        deploying: Callable[[], list[str]],
        reloading: Callable[[], None],
        ready: Callable[[], None],
        started: float,
    ) -> None:
        self._keeper = keeper
        self._mux = mux
        self._environ = environ
        self._deploying = deploying
        self._reloading = reloading
        self._ready = ready
        self._started = started  # when this image started: the client waits for a new one
        self._listener: socket.socket | None = None
        self._attempts = 0  # re-execs started by this image
        self._failed: str | None = None  # why the last one's execve failed
        # Called once every line is in the log's file, just before execve (the router's
        # access log marks what it has read: the next image starts after it).
        self.before_exec: list[Callable[[], None]] = []

    def status(self) -> dict[str, int | str | None]:
        """For ``status``: how many re-execs this image started and why the last failed, so
        a ``daemon:reload`` that waits for the new image learns there will be none."""
        return {"attempts": self._attempts, "error": self._failed}

    def listening(self, sock: socket.socket) -> None:
        """The control socket: the next image inherits it, so no client is refused."""
        self._listener = sock

    async def request(self, group: anyio.abc.TaskGroup) -> dict[str, float | int]:
        """``daemon:reload``: check that a re-exec may happen now and start it in ``group``
        once the reply is out; DokuenError (one line) when it must not (a deploy runs, the
        new program does not start)."""
        if busy := self._deploying():
            raise DokuenError(
                f"{', '.join(busy)} is deploying; run dokuenctl daemon:reload once it is done"
            )
        argv, environ = reexec.command_line(), self._environ()
        if problem := await anyio.to_thread.run_sync(reexec.check, argv, environ):
            log.error("daemon.reexec_refused", error=problem)
            raise DokuenError(problem)
        self._attempts += 1
        self._failed = None
        group.start_soon(self._replace, argv, environ)
        return {"pid": os.getpid(), "started": self._started, "attempt": self._attempts}

    def on_signal(self, group: anyio.abc.TaskGroup) -> None:
        """SIGUSR2 (``systemctl reload``): the same, its refusal in the log."""
        group.start_soon(self._signalled, group)

    async def _signalled(self, group: anyio.abc.TaskGroup) -> None:
        with contextlib.suppress(DokuenError):  # logged by request
            await self.request(group)

    async def _replace(self, argv: list[str], environ: dict[str, str]) -> None:
        await anyio.sleep(REPLY)
        self._reloading()
        if self._keeper is not None:
            self._keeper.frozen = True
        await anyio.sleep(SETTLE)  # every pump hands the log what it has read
        if self._keeper is not None:
            self._keeper.freeze()  # and the lines it holds back wait in carry files
        await self._mux.drained()
        for prepare in self.before_exec:
            prepare()
        if self._keeper is not None:
            environ = {**environ, handed.FIFO_FDS: self._keeper.hand()}
        if self._listener is not None:
            self._listener.set_inheritable(True)
            environ = {**environ, INHERITED_FD: str(self._listener.fileno())}
        error = reexec.execute(argv, environ)
        if self._listener is not None:
            self._listener.set_inheritable(False)
        if self._keeper is not None:  # still the old image: it goes on as it was
            self._keeper.thaw()
        self._failed = (
            f"the re-exec failed and dokuend goes on as it was: {explain(error)}; fix the "
            "installation and run dokuenctl daemon:reload again"
        )
        log.error("daemon.reexec_failed", error=explain(error))
        self._ready()
