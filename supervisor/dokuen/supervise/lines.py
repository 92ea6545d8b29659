"""Lines: the pure half of the unified log. ``LineFramer`` cuts a process's byte stream into
whole lines (bounded in length, a trailing partial kept), and ``render``, ``render_block``
and ``render_parts`` stamp them as unified-log lines, ``TIME APP[SOURCE]: LINE``.
"""

import functools
import math
from datetime import UTC, datetime

MAX_LINE = 64 * 1024
CONTINUES = b" [line continues]"
CONTINUED = b"[continued] "


def _may_hold_long_line(data: bytes, max_line: int = MAX_LINE) -> bool:
    """False when no run of bytes between newlines in ``data`` is over ``max_line`` long;
    True when one may be. Looks for a newline in each window of half that size: a longer
    run covers a whole window, so it cannot hide, and a search per window is all it costs."""
    half = max_line // 2
    if half < 1:
        return True
    return any(data.find(b"\n", i, i + half) < 0 for i in range(0, len(data) - half + 1, half))


class LineFramer:
    """Cuts a byte stream into lines: never splits a line that fits in ``max_line`` bytes,
    cuts longer ones into pieces marked with CONTINUES / CONTINUED, and keeps a trailing
    partial line until more bytes or ``flush`` arrive."""

    __slots__ = ("_continuing", "_partial", "max_line")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._partial = b""
        self._continuing = False

    @property
    def pending(self) -> bool:
        """True when a partial line waits for its newline."""
        return bool(self._partial)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the lines (without newlines) that are now complete."""
        return self._lines(self._partial + chunk if self._partial else chunk)

    def feed_block(self, chunk: bytes) -> bytes:
        """Add bytes; return the lines that are now complete as one block, each line ending
        in a newline (b"" when none is): the lines ``feed`` gives, without an object per
        line. A stream with no line over ``max_line`` (the usual one) is only searched for
        its last newline."""
        data = self._partial + chunk if self._partial else chunk
        if self._continuing or (
            len(data) > self.max_line and _may_hold_long_line(data, self.max_line)
        ):
            lines = self._lines(data)
            return b"\n".join(lines) + b"\n" if lines else b""
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        return data[:end]

    def _lines(self, data: bytes) -> list[bytes]:
        lines = data.split(b"\n")
        partial = lines.pop()
        if self._continuing or (
            len(data) > self.max_line and max(map(len, lines), default=0) > self.max_line
        ):
            lines = [piece for line in lines for piece in self._pieces(line, complete=True)]
        if len(partial) > self.max_line:
            keep = (len(partial) - 1) // self.max_line * self.max_line
            lines += self._pieces(partial[:keep], complete=False)
            partial = partial[keep:]
        self._partial = partial
        return lines

    def flush(self) -> list[bytes]:
        """Return the partial line as a line of its own (after a pause, or at end of file)."""
        if not self._partial:
            return []
        partial, self._partial = self._partial, b""
        return self._pieces(partial, complete=True)

    def flush_block(self) -> bytes:
        """``flush`` as ``feed_block`` gives lines: one block, each line ending in a newline
        (b"" when nothing was partial)."""
        pieces = self.flush()
        return b"\n".join(pieces) + b"\n" if pieces else b""

    def _pieces(self, line: bytes, *, complete: bool) -> list[bytes]:
        size = self.max_line
        chunks = [line[i : i + size] for i in range(0, len(line), size)] or [b""]
        pieces = []
        for number, chunk in enumerate(chunks):
            head = CONTINUED if number or self._continuing else b""
            tail = b"" if complete and number == len(chunks) - 1 else CONTINUES
            pieces.append(head + chunk + tail)
        self._continuing = not complete
        return pieces


def timestamp(now: float) -> str:
    """RFC 3339 with microseconds and an explicit UTC offset, as Heroku writes it: what
    ``datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds")`` gives (the same
    rounding), for less, by formatting each second only once."""
    whole = math.floor(now)
    micros = round((now - whole) * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    return f"{_second(whole)}.{micros:06d}+00:00"


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> str:
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def render(stamp: str, app: str, source: str, lines: list[bytes]) -> bytes:
    """Render lines from one source, all stamped alike, as unified-log bytes."""
    prefix = f"{stamp} {app}[{source}]: ".encode()
    return prefix + (b"\n" + prefix).join(lines) + b"\n"


def render_block(stamp: str, app: str, source: str, block: bytes) -> bytes:
    """``render`` for lines given as one block, each ending in a newline (``feed_block``)."""
    return b"".join(render_parts(stamp, app, source, block))


def render_parts(stamp: str, app: str, source: str, block: bytes) -> tuple[bytes, memoryview]:
    """``render_block``'s bytes in two parts, for a ``writev``: the first line's prefix, and
    the rest. The block is copied once (by the replace); a big block's extra copies cost
    more than the replace itself (the allocator returns and takes back the memory)."""
    prefix = f"{stamp} {app}[{source}]: ".encode()
    body = block.replace(b"\n", b"\n" + prefix)
    return prefix, memoryview(body)[: len(body) - len(prefix)]


def last_lines(block: bytes, count: int, window: int = 2048) -> list[bytes]:
    """The last ``count`` lines of a block (each line ending in a newline), copying no more
    than the last ``window`` bytes when those hold them all."""
    if len(block) > window:
        lines = block[-window:].rsplit(b"\n", count + 1)
        if len(lines) == count + 2:  # the first piece may be cut: dropped
            return lines[1:-1]
    return block.rsplit(b"\n", count + 1)[:-1][-count:]
