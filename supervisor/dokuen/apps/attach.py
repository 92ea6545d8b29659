"""Who a one-off process's streams are joined to: its requester over the control socket
(``dokuenctl run``: stdin, output and, with a terminal on the client's side, a pty), or the
unified log (``run:detached``, detached.py). ``releasing.run_once`` spawns the process with
the attachment's spawner and lets its ``relay`` move the bytes until the process exits."""

import base64
import binascii
import contextlib
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio

from dokuen.control import Output
from dokuen.errors import DokuenError, ProtocolError
from dokuen.supervise.ending import Child
from dokuen.supervise.formation import ProcessSpec
from dokuen.supervise.process import Spawner
from dokuen.supervise.spawn import OsSpawner
from dokuen.supervise.streams import Streams, WindowSize, check_term

READ_SIZE = 1 << 16
DRAIN_AFTER_EXIT = 0.5  # seconds to pass on what is left once the process exited


class Attached(Protocol):
    """What ``releasing.run_once`` needs of an attachment."""

    def spawner(self, spawner: Spawner) -> Spawner:
        """The spawner to start the process with (its streams joined to the attachment)."""

    async def relay(self, child: Child, spec: ProcessSpec) -> int:
        """Move the process's bytes until it exits; return its exit status."""

    def close(self) -> None:
        """Release what the attachment holds (after the process is gone, or failed to start)."""


class _JoinedSpawner:
    """Starts a process with ``streams`` as its stdin and output (and ``TERM``)."""

    def __init__(self, spawner: OsSpawner, streams: Streams, term: str | None) -> None:
        self._spawner = spawner
        self._streams = streams
        self._term = term

    async def __call__(
        self, command: str, env: Mapping[str, str], cwd: Path, **options: Any
    ) -> Child:
        if self._term is not None:
            env = {**env, "TERM": self._term}
        self._streams.give_to(options.get("user"))
        try:
            return await self._spawner(command, env, cwd, stdio=self._streams.stdio, **options)
        finally:
            self._streams.spawned()  # the child has its ends, or failed: ours are closed


class Requester:
    """``dokuenctl run`` attached to its process over the control socket (control.py says
    the messages): what the client sends goes to the process's stdin, its terminal's size
    to the pty; the process's output goes back as ``data``. The client hanging up kills the
    process group."""

    def __init__(self, out: Output, size: WindowSize | None, term: str | None) -> None:
        self._out = out
        self._term = term
        self._streams = Streams(size)
        self._failure: DokuenError | None = None

    @classmethod
    def from_request(cls, args: dict[str, Any], out: Output) -> "Requester | None":
        """The attachment a ``run`` request asks for: None (an older client: no stdin,
        ``output`` text), pipes, or a terminal (``"tty": {"size": [R, C], "term": T}``).

        Raises:
            ProtocolError: ``attach`` or ``tty`` is not what control.py describes.
        """
        attach, tty = args.get("attach"), args.get("tty")
        if attach is None or attach is False:
            return None
        if attach is not True:
            raise ProtocolError("argument 'attach' must be true or false")
        if tty is None:
            return cls(out, None, None)
        if not isinstance(tty, dict):
            raise ProtocolError("argument 'tty' must be an object with 'size' and 'term'")
        return cls(out, WindowSize.parse(tty.get("size")), check_term(tty.get("term")))

    def spawner(self, spawner: Spawner) -> Spawner:
        if not isinstance(spawner, OsSpawner):
            raise DokuenError("this dokuend cannot attach to processes (it runs no real ones)")
        return _JoinedSpawner(spawner, self._streams, self._term)

    async def relay(self, child: Child, spec: ProcessSpec) -> int:
        output_done = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pump_output, child, output_done)
            tg.start_soon(self._pump_input, child)
            status = await child.wait()
            with anyio.move_on_after(DRAIN_AFTER_EXIT):
                await output_done.wait()
            tg.cancel_scope.cancel()
        if self._failure is not None:
            raise self._failure
        return status

    async def _pump_output(self, child: Child, done: anyio.Event) -> None:
        try:
            while chunk := await self._streams.read(READ_SIZE):
                await self._out.send({"data": base64.b64encode(chunk).decode("ascii")})
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            child.signal_group(signal.SIGKILL)  # the requester is gone
        finally:
            done.set()

    async def _pump_input(self, child: Child) -> None:
        try:
            async for message in self._out.messages():
                await self._take(message)
        except ProtocolError as exc:
            self._failure = exc
        # The requester hung up (or broke the protocol): its process goes with it.
        child.signal_group(signal.SIGKILL)

    async def _take(self, message: dict[str, Any]) -> None:
        if "stdin" in message:
            text = message["stdin"]
            try:
                data = base64.b64decode(text, validate=True) if isinstance(text, str) else None
            except (binascii.Error, ValueError):
                data = None
            if data is None:
                raise ProtocolError("'stdin' must be base64 text")
            await self._streams.write(data)
        elif message.get("eof") is True:
            await self._streams.end_input()
        elif "resize" in message:
            self._streams.resize(WindowSize.parse(message["resize"]))
        else:
            raise ProtocolError(
                f"unknown message {sorted(message)} (send stdin, eof or resize; see control.py)"
            )

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._streams.close()
