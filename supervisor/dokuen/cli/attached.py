"""dokuenctl's side of an attached ``run`` (control.py has the messages): its stdin goes to
the process, the process's output comes back to its stdout, and with a terminal on both
stdin and stdout, the terminal is in raw mode (every key, Ctrl-C and Ctrl-D included, goes
to the process's pty) and its size follows the window. One thread, one ``select`` loop;
the terminal is restored on every way out."""

import base64
import contextlib
import json
import os
import select
import signal
import socket
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dokuen.client import connect, reply_result
from dokuen.errors import DaemonUnavailable, DokuenError

READ_SIZE = 1 << 16
HIGH_WATER = 1 << 20  # bytes waiting for dokuend before stdin is read no further
STDIN, STDOUT = 0, 1


def wants_terminal(no_tty: bool) -> bool:
    """A pty for the process when both our stdin and our stdout are a terminal."""
    return not no_tty and os.isatty(STDIN) and os.isatty(STDOUT)


def window_size() -> list[int]:
    size = os.get_terminal_size(STDOUT)
    return [size.lines, size.columns]


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # so `finally` restores the terminal


@contextlib.contextmanager
def raw_terminal() -> Iterator[None]:
    """Our terminal in raw mode for the block, restored however it ends (an error,
    SIGTERM, SIGHUP, the remote process ending)."""
    saved = termios.tcgetattr(STDIN)
    handlers = {
        signum: signal.signal(signum, _exit_on_signal) for signum in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        tty.setraw(STDIN, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(STDIN, termios.TCSADRAIN, saved)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


def _stdin_usable() -> bool:
    try:
        os.fstat(STDIN)
    except OSError:
        return False  # closed (`<&-`): as good as empty
    return True


def run(
    socket_path: Path,
    args: dict[str, Any],
    *,
    terminal: bool,
    on_warnings: Callable[[list[str]], None],
) -> Any:
    """Send ``run`` attached, relay until the daemon's last line, return its result.

    Raises:
        DokuenError: the daemon refused or failed the request (its message).
        DaemonUnavailable: dokuend is not there, or went away.
    """
    request: dict[str, Any] = {"command": "run", "args": {**args, "attach": True}}
    if terminal:
        term = os.environ.get("TERM") or "xterm"
        request["args"]["tty"] = {"size": window_size(), "term": term}
    client = connect(socket_path)
    with client, contextlib.ExitStack() as stack:
        if terminal:
            stack.enter_context(raw_terminal())
        return _Relay(client, terminal, on_warnings).run(_line(request))


class _Relay:
    def __init__(
        self, client: socket.socket, terminal: bool, on_warnings: Callable[[list[str]], None]
    ) -> None:
        self._client = client
        self._terminal = terminal
        self._on_warnings = on_warnings
        self._outbox = bytearray()
        self._inbox = bytearray()
        self._stdin_open = _stdin_usable()
        self._sending = True

    def run(self, request: bytes) -> Any:
        self._outbox += request
        if not self._stdin_open:
            self._outbox += _line({"eof": True})
        self._client.setblocking(False)
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)

        def resized(_signum: int, _frame: object) -> None:
            with contextlib.suppress(OSError):
                os.write(wake_write, b"w")

        previous = signal.signal(signal.SIGWINCH, resized) if self._terminal else None
        try:
            while True:
                result = self._step(wake_read)
                if result is not None:
                    return result[0]
        finally:
            if previous is not None:
                signal.signal(signal.SIGWINCH, previous)
            os.close(wake_read)
            os.close(wake_write)

    def _step(self, wake: int) -> tuple[Any] | None:
        readers: list[Any] = [self._client, wake]
        if self._stdin_open and len(self._outbox) < HIGH_WATER:
            readers.append(STDIN)
        writers = [self._client] if self._outbox and self._sending else []
        ready, writable, _ = select.select(readers, writers, [])
        if wake in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake, 64)
            self._outbox += _line({"resize": window_size()})
        if STDIN in ready:
            data = os.read(STDIN, READ_SIZE)
            if data:
                self._outbox += _line({"stdin": base64.b64encode(data).decode("ascii")})
            else:
                self._stdin_open = False
                self._outbox += _line({"eof": True})
        if writable:
            try:
                sent = self._client.send(self._outbox)
            except BlockingIOError:
                sent = 0
            except OSError:
                # The daemon closed its side: its last line may still be there to read.
                self._sending = False
                sent = len(self._outbox)
            del self._outbox[:sent]
        if self._client in ready:
            return self._receive()
        return None

    def _receive(self) -> tuple[Any] | None:
        try:
            chunk = self._client.recv(READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise DaemonUnavailable(f"lost the connection to dokuend ({exc})") from None
        if not chunk:
            raise DokuenError("dokuend closed the connection without an answer (see its log)")
        self._inbox += chunk
        while (end := self._inbox.find(b"\n")) >= 0:
            message = json.loads(self._inbox[:end])
            del self._inbox[: end + 1]
            if "data" in message:
                _write_all(STDOUT, base64.b64decode(message["data"]))
            elif "output" in message:
                sys.stdout.write(message["output"])
                sys.stdout.flush()
            else:
                return (reply_result(message, self._on_warnings),)
        return None
