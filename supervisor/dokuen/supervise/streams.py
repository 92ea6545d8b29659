"""A child's standard streams when someone is attached to it (``dokuenctl run``): a stdin
pipe and an output pipe, or a pseudo-terminal; and the non-blocking reads and writes of the
daemon's ends of them on the event loop.

``Stdio`` says what ``OsSpawner`` gives the child; ``Streams`` opens the pipes or the pty,
hands the child its ends and keeps the daemon's. With a terminal, the child's ``/bin/sh``
is started through util-linux ``setsid --ctty``: a new session whose controlling terminal
is the pty's slave (Ctrl-C, job control and ``/dev/tty`` work), the same pid, no Python
code between fork and exec.
"""

import contextlib
import errno
import fcntl
import grp
import os
import pwd
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass

from dokuen.errors import DokuenError, ProtocolError
from dokuen.supervise.readiness import wait_readable, wait_writable

MAX_SIDE = 10_000  # rows or columns: more is a client's mistake, not a screen
TERM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


@dataclass(frozen=True)
class WindowSize:
    rows: int
    cols: int

    @classmethod
    def parse(cls, value: object) -> "WindowSize":
        """``[rows, cols]`` from a client; ProtocolError for anything else."""
        if (
            isinstance(value, list)
            and len(value) == 2
            and all(type(n) is int and 0 <= n <= MAX_SIDE for n in value)
        ):
            return cls(value[0], value[1])
        raise ProtocolError(f"a window size must be [rows, cols] of 0 to {MAX_SIDE}")


def check_term(value: object) -> str:
    """The client's ``TERM`` (``xterm-256color``); ProtocolError for anything else."""
    if isinstance(value, str) and TERM_NAME.fullmatch(value):
        return value
    raise ProtocolError("'term' must be a terminal type like xterm-256color")


@dataclass(frozen=True)
class Stdio:
    """What a child's fds 0, 1 and 2 are. The default: /dev/null in, one pipe out (which the
    spawner makes and reads). Otherwise the given fds, which the child gets as they are
    (stdout and stderr both ``output``); with ``terminal``, stdin is a pty's slave that
    becomes the child's controlling terminal in a session of its own."""

    stdin: int = subprocess.DEVNULL
    output: int = subprocess.PIPE
    terminal: bool = False

    def argv(self, argv: list[str]) -> list[str]:
        if not self.terminal:
            return argv
        setsid = shutil.which("setsid", path="/usr/bin:/bin")
        if setsid is None:
            raise DokuenError(
                "cannot give the process a terminal: setsid (util-linux) is not installed; "
                "install util-linux, or run without a terminal (dokuenctl run --no-tty)"
            )
        return [setsid, "--ctty", *argv]


NO_INPUT = Stdio()  # what every process of the formation gets


def set_window_size(fd: int, size: WindowSize) -> None:
    """Set a terminal's size; the kernel sends SIGWINCH to its foreground process group."""
    import termios  # noqa: PLC0415 (by the first terminal: 60 KiB a daemon without one keeps)

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.rows, size.cols, 0, 0))


def _owner_ids(user: str | int) -> tuple[int, int]:
    if isinstance(user, int):
        return user, user
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


class Streams:
    """The pipes or the pty between the daemon and one attached child.

    ``stdio`` is what to spawn the child with; call ``spawned`` once it has started (or
    failed to): the child's ends are closed here, so end of file reaches each side.
    """

    def __init__(self, size: WindowSize | None) -> None:
        self.terminal = size is not None
        if size is not None:
            master, slave = os.openpty()
            set_window_size(slave, size)
            self._child_ends = [slave]
            self._input = self._output = master
            self.stdio = Stdio(stdin=slave, output=slave, terminal=True)
        else:
            stdin_read, self._input = os.pipe()
            self._output, output_write = os.pipe()
            self._child_ends = [stdin_read, output_write]
            self.stdio = Stdio(stdin=stdin_read, output=output_write)
        for fd in {self._input, self._output}:
            os.set_blocking(fd, False)
        self._input_open = True

    def give_to(self, user: str | int | None) -> None:
        """Make the terminal the child's, as login does: owned by its uid, group tty,
        mode 0620 (programs that reopen their tty by name need that)."""
        if not self.terminal or user is None or os.geteuid() != 0:
            return
        uid, gid = _owner_ids(user)
        with contextlib.suppress(KeyError):
            gid = grp.getgrnam("tty").gr_gid
        slave = self._child_ends[0]
        os.fchown(slave, uid, gid)
        os.fchmod(slave, 0o620)

    def spawned(self) -> None:
        for fd in self._child_ends:
            os.close(fd)
        self._child_ends = []

    async def read(self, max_bytes: int) -> bytes:
        """The child's next output; b"" once every writer is gone (a pty's master says EIO
        when its slave closed)."""
        while True:
            try:
                return os.read(self._output, max_bytes)
            except BlockingIOError:
                await wait_readable(self._output)
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return b""
                raise

    async def write(self, data: bytes) -> None:
        """Give ``data`` to the child's stdin; dropped once the child closed it."""
        view = memoryview(data)
        while view and self._input_open:
            try:
                view = view[os.write(self._input, view) :]
            except BlockingIOError:
                await wait_writable(self._input)
            except (BrokenPipeError, OSError):
                return  # the child is gone or closed its stdin: nothing left to read it

    async def end_input(self) -> None:
        """The requester's stdin ended: close the pipe; on a terminal type the EOF character
        (Ctrl-D), as a person at a terminal ends input."""
        if self.terminal:
            await self.write(b"\x04")
        elif self._input_open:
            self._input_open = False
            os.close(self._input)

    def resize(self, size: WindowSize) -> None:
        if self.terminal:
            set_window_size(self._output, size)

    def close(self) -> None:
        self.spawned()
        for fd in {self._output, self._input} if self._input_open else {self._output}:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._input_open = False
