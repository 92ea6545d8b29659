"""A real pseudo-terminal for end-to-end tests: a program started on its slave side (as a
person's shell would start it), driven through the master side."""

import errno
import fcntl
import os
import pty
import select
import signal
import struct
import termios
import time
from collections.abc import Mapping, Sequence

import pytest


class Terminal:
    """``argv`` running with a new pty as its controlling terminal, stdin and stdout."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], rows: int = 24, cols: int = 80
    ) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: exec at once, nothing of pytest's must run here
            try:
                os.execve(argv[0], list(argv), dict(env))
            finally:
                os._exit(127)
        self.resize(rows, cols, notify=False)
        self.seen = b""
        self.status: int | None = None

    def resize(self, rows: int, cols: int, *, notify: bool = True) -> None:
        """Set the window size, and send SIGWINCH as a terminal emulator does."""
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if notify:
            os.kill(self.pid, signal.SIGWINCH)

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def expect(self, wanted: bytes, timeout: float = 20) -> bytes:
        """Read until ``wanted`` appears after what earlier calls consumed; return the text
        up to and including it. Fails the test on timeout or end of output."""
        deadline = time.monotonic() + timeout
        while wanted not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                pytest.fail(f"{wanted!r} did not appear; the terminal showed {self.seen!r}")
        before, _, self.seen = self.seen.partition(wanted)
        return before + wanted

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError as exc:  # EIO: the slave side is closed, the program ended
            if exc.errno != errno.EIO:
                raise
            return False
        self.seen += chunk
        return bool(chunk)

    def wait(self, timeout: float = 20) -> int:
        """The program's exit code (128+N for a signal), reading what it still shows."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                self.status = code if code >= 0 else 128 - code
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the program did not end; the terminal showed {self.seen!r}")
            self._read(0.05)
        return self.status

    def local_modes(self) -> int:
        """The terminal's local modes (ECHO, ICANON, ...), as its program left them."""
        modes: int = termios.tcgetattr(self.fd)[3]
        return modes

    def close(self) -> None:
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.status = -1
        os.close(self.fd)
