"""The line a re-exec carries: what a FIFO's reader held back (a line still without its
newline, keeper.py) is saved beside the FIFO (``NAME.carry``) for the next image, marked
with the generation of that hand-over, which is written down beside the run directory's
records (``carry.generation``) and read once by the next image. A carry file of another
generation is stale (an attempt whose ``execve`` failed: the image that went on wrote its
line; one left by whatever else) and is removed unread, never put in front of a line.
"""

import contextlib
import os
from pathlib import Path

from dokuen.events import get_logger

log = get_logger()


class Generation:
    """The generation of one run directory's carry files."""

    def __init__(self, run: Path) -> None:
        self.file = run / "carry.generation"
        self._read = False
        self._taken: str | None = None

    def begin(self) -> str:
        """A new generation, written down for the next image (raises OSError)."""
        generation = os.urandom(8).hex()
        self.file.write_text(generation + "\n")
        return generation

    def end(self) -> None:
        """The hand-over failed: no image is to read this generation's carry files."""
        with contextlib.suppress(OSError):
            self.file.unlink()

    def taken(self) -> str | None:
        """The generation this image is to take carry files of, read once (the file goes
        then); None when no hand-over came before this start."""
        if not self._read:
            try:
                self._taken = self.file.read_text().strip() or None
            except OSError:
                self._taken = None
            self.end()
            self._read = True
        return self._taken


def save(path: Path, generation: str, line: bytes) -> None:
    """Write the held ``line`` to the carry file ``path`` (blocking, small)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as carry:
            carry.write(generation.encode() + b"\n" + line)
    except OSError as exc:
        log.warning("fifo.carry_failed", path=str(path), error=str(exc))


def take(path: Path, generation: str | None) -> bytes:
    """The line in the carry file ``path`` when it is of ``generation``; read once: the
    file is removed either way."""
    try:
        data = path.read_bytes()
    except OSError:
        return b""
    finally:
        drop(path)
    mark, newline, line = data.partition(b"\n")
    if generation is not None and newline and mark == generation.encode():
        return line
    log.warning("fifo.carry_stale", path=str(path), size=len(data))
    return b""


def drop(path: Path) -> None:
    with contextlib.suppress(OSError):  # one left behind is of a spent generation
        path.unlink()
