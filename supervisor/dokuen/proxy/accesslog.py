"""Router lines, the I/O half: nginx's workers write every request's line to one buffered
access log (``$DOKUEN_HOME/nginx/router/access.log``); dokuend reads what was appended each
time the kernel says the file changed (inotify), renders whole lines a turn at a time and
hands them to the log multiplexer.

nginx never waits for dokuend: a worker's ``write`` of its buffer goes to a file, so a
dokuend stopped, frozen or re-executing leaves the lines waiting there, and the next turn
reads them. What was read is given back to the file system by punching a hole over it
(``fallocate(PUNCH_HOLE|KEEP_SIZE)``): the file's size grows, its blocks do not, and the
hole is also where reading resumes after a restart or a ``kill -9`` (the first data, its
leading NUL bytes skipped), so nothing needs renaming, reopening or a signal to nginx. A
hole is punched only over lines the multiplexer has written: a ``kill -9`` doubles at most
the lines of the last PUNCH_AFTER seconds and never loses one. Where the file system cannot
punch holes, the file is renamed once it is ROTATE_AT long and nginx reloaded (HUP: its
master, root, opens the new file; USR1 would have the workers reopen it, and they may not
reach the directory), and the old one read to its end while the old workers write out
what they hold.

The directory is dokuend's alone (0700): no app can read other apps' requests, write a line
or put a link in its place. The file is opened without following links; what root puts at
its name (a link, a FIFO, a logrotate's new file) is cleared or taken, never followed, nginx
told (logplace.py); a file shorter than what was read (copytruncate) is read from its start.
"""

import asyncio
import contextlib
import errno
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import anyio
import anyio.abc

from dokuen.events import get_logger
from dokuen.proxy import logplace
from dokuen.proxy.holes import DIRECTORY_CHANGES, first_line, punch, watch
from dokuen.proxy.master import signal_master
from dokuen.proxy.router import ACCESS_LOG, ERROR_LOG, dyno_table, render_batch, render_line
from dokuen.proxy.unsent import Unsent
from dokuen.supervise.logmux import LogMux, timestamp

log = get_logger()

CHUNK = 1 << 20  # read a turn at most (about 3,000 lines); the rest at the next, at once
# A line longer than CHUNK (nginx's are 8 KiB at most: large_client_header_buffers) is shown
# cut, its first MAX_LINE bytes.
MAX_LINE = 64 << 10
PUNCH_AFTER = 0.1  # seconds after a turn, what the log has written is punched
# Turns are at least this far apart (seconds): each costs about 0.5 ms of CPU whatever it
# reads (the wakeup, the log writer's thread), and nginx's workers write every 100 ms or
# 64 KiB each. A line waits at most FLUSH (nginx's) and this.
TURN_EVERY = 0.05
BEHIND = 0.05  # seconds to wait while the log writer is behind: the lines wait in the file
POLL = 0.2  # seconds between looks where there is no inotify (not Linux)
ROTATE_AT = 16 << 20  # where holes cannot be punched: the size at which the file is renamed
OLD_KEPT = 5.0  # seconds a renamed file is read after nginx was told to reopen


class AccessLog:
    """Reads the router access log; ``dynos`` maps web ports to (app, process name)."""

    def __init__(
        self,
        prefix: Path,
        mux: LogMux,
        master: Callable[[], int | None] = lambda: None,
        rotate_at: int = ROTATE_AT,
    ) -> None:
        """``prefix`` is nginx's ($DOKUEN_HOME/nginx); ``master`` the managed master's pid
        (told to reopen the file where holes cannot be punched, at ``rotate_at`` bytes)."""
        self._rotate_at = rotate_at
        self.path = prefix / ACCESS_LOG
        self._mux = mux
        self._master = master
        self._current: dict[int, tuple[str, str]] = {}
        self._previous: dict[int, tuple[str, str]] = {}
        self._dynos: dict[int, tuple[str, str]] = {}  # both, the current ones first
        self._table = dyno_table(self._dynos)
        self.counts = {"lines": 0, "unparsed": 0, "unsent": 0}
        self.turns = 0  # wakeups that read something
        self.unsent = Unsent(prefix / ERROR_LOG)  # nginx's error log: what it could not write
        self._fd = -1
        self._inode = 0  # the file's, to tell it from what may be put at its name
        self._offset = 0  # where the next line starts
        self._marks: list[tuple[int, int]] = []  # (the log's stream position, offset) to punch
        self._punched = 0
        self._punches = True  # until the file system says it cannot
        self._old: tuple[int, int, float] | None = None  # a renamed file: fd, offset, since
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._notify = -1
        self._last_turn = float("-inf")  # loop time
        self._due = False  # a turn is set for later (TURN_EVERY)
        self._more = False  # the last read was a full CHUNK: the next turn comes at once
        self.problem: str | None = None

    def update(self, webs: Iterable[tuple[str, str, int]]) -> None:
        """The running web processes, as (app, name, port), after every nginx change. The
        ports of the change before stay known a while: their last requests still arrive."""
        dynos = {port: (app, name) for app, name, port in webs}
        if dynos != self._current:
            self._previous, self._current = self._current, dynos
            self._dynos = {**self._previous, **self._current}
            self._table = dyno_table(self._dynos)

    @property
    def dynos(self) -> Mapping[int, tuple[str, str]]:
        return self._dynos

    def status(self) -> dict[str, int | str | None]:
        """What ``dokuenctl status`` shows: the counts, the turns, and why there are no
        lines if so."""
        self.counts["unsent"] += self.unsent.count()
        return {**self.counts, "problem": self.problem, "turns": self.turns}

    def prepare(self) -> None:
        """Make the directory (0700, dokuend's) and the file before nginx (root) opens it:
        a link or anything else root put at either name is cleared, never followed (nginx
        would), and said. Raises OSError."""
        directory = self.path.parent
        self._cleared(directory, logplace.own_directory(directory))
        fd, info, what = logplace.own_file(self.path)
        self._cleared(self.path, what)
        if self._fd >= 0 and os.fstat(self._fd).st_ino == info.st_ino:
            os.close(fd)
            return
        if self._fd >= 0:  # replaced: the old one read out while nginx's old workers write it
            self._retire()
        self._fd, self._offset, self._marks = fd, first_line(fd), []
        self._inode = info.st_ino
        noted, why = logplace.read_note(self.path.with_name("read"), info.st_ino, info.st_size)
        if why is not None:  # read from the first line kept: some may be shown twice
            log.warning("router.note_ignored", path=str(self.path.with_name("read")), why=why)
        self._offset = self._punched = max(self._offset, noted)
        if self._notify >= 0:  # a watch follows its file: the new one needs its own
            watch(self.path, self._notify)
            watch(directory, self._notify, DIRECTORY_CHANGES)

    def _cleared(self, name: Path, what: str | None) -> None:
        if what is not None:
            log.warning("router.displaced", path=str(name), what=what)
            self._mux.event("nginx", f"{name} was {what}: cleared, never followed")

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch the file and read it until cancelled; then read what it holds once more."""
        try:
            self.prepare()
        except OSError as exc:  # the apps are served all the same, without router lines
            self.problem = f"no router lines: cannot open {self.path}: {exc.strerror}"
            log.error("router.unavailable", problem=self.problem)
            task_status.started()
            return
        loop = self._loop = asyncio.get_running_loop()
        notify = self._notify = watch(self.path)
        if notify >= 0:  # and what is put at its name
            watch(self.path.parent, notify, DIRECTORY_CHANGES)
            loop.add_reader(notify, self._changed, notify)
        task_status.started()
        log.info("router.reading", path=str(self.path), offset=self._offset, inotify=notify >= 0)
        try:
            self._turn()  # what waited in the file for this dokuend
            while True:
                await anyio.sleep(POLL if notify < 0 else 3600)
                if notify < 0:
                    self._check_place()
                    self._turn()
        finally:
            if notify >= 0:
                loop.remove_reader(notify)
                os.close(notify)
            if self._timer is not None:
                self._timer.cancel()
            self._loop = None
            self._turn()
            # The log writer outlives this task and writes what it was handed before it
            # closes (a stop, a re-exec): all of it is the next dokuend's no more.
            self._punch(float("inf"))
            self._note()
            if self._old is not None:
                os.close(self._old[0])
                self._old = None
            os.close(self._fd)
            self._fd = -1
            log.info("router.closed", **self.counts)

    def hand_over(self) -> None:
        """Before a re-exec, once the log has written every line it was handed: mark all of
        them read (the next image starts after them; nginx's later lines wait for it)."""
        if self._fd >= 0:
            self._punch(self._mux.written)
            self._note()

    def _note(self) -> None:
        """Where holes cannot be punched: write down how far this file was read (for the
        next dokuend after a stop or a re-exec; a ``kill -9`` reads it from the start)."""
        if self._punches:
            return
        try:
            logplace.write_note(self.path.with_name("read"), self._inode, self._punched)
        except OSError as exc:  # the next dokuend reads the file from its start
            log.warning("router.note_failed", error=str(exc))

    def _changed(self, notify: int) -> None:
        """The kernel says nginx wrote: drop its events (any number: one turn reads all)."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(notify, 4096):
                pass
        self._check_place()
        if self._due:  # a turn is set already
            return
        wait = self._last_turn + TURN_EVERY - self._loop.time()  # type: ignore[union-attr]
        if wait > 0:  # the writes of the next moments are read together
            self._due = True
            self._later(wait)
            return
        self._turn()

    def _turn(self) -> None:
        """Read the whole lines appended since the last turn, render and hand them to the
        log in one piece, stamped alike; a partial last line waits for its end."""
        self._due = False
        if self._fd < 0:
            return
        if self._loop is not None:
            self._last_turn = self._loop.time()
        if self._loop is not None and self._mux.behind:  # they wait in the file meanwhile
            self._later(BEHIND)
            return
        size = os.fstat(self._fd).st_size
        if size < self._offset:  # truncated behind dokuend's back (logrotate's copytruncate)
            log.warning("router.truncated", path=str(self.path), size=size, read=self._offset)
            self._offset = self._punched = first_line(self._fd)
            self._marks = []  # not to be punched: the new lines are where they were
        self._punch(self._mux.written)
        self._more = False
        if self._old is not None:
            self._read_old()
        read = self._read(self._fd, self._offset)
        if read is not None:
            self._offset = read
            self._marks.append((self._mux.queued, read))
        if self._more:  # a backlog (dokuend was away): a read a turn, the loop free between
            self._due = True
            self._later(0)
        elif self._marks:
            self._later(PUNCH_AFTER)
        if not self._punches and self._offset >= self._rotate_at and self._old is None:
            self._rotate()

    def _read(self, fd: int, offset: int) -> int | None:
        """Hand the whole lines of one read at ``offset`` to the log: the offset after them,
        or None when there was no whole line. ``_more``: the read was full (more waits)."""
        data = os.pread(fd, CHUNK, offset)
        self._more |= len(data) == CHUNK
        if data[:1] == b"\0":  # the end of a punched range, zeroed: read before
            stripped = data.lstrip(b"\0")
            offset += len(data) - len(stripped)
            data = stripped
        end = data.rfind(b"\n") + 1
        if not end:
            if len(data) < CHUNK:  # a line nginx has not written to its end yet
                return None
            # a line longer than any nginx writes: shown cut, the rest skipped to its end
            self._render_odd([(data[:MAX_LINE], True)])
            rest = offset + len(data)
            while (more := os.pread(fd, CHUNK, rest)) and (cut := more.find(b"\n")) < 0:
                rest += len(more)
            return rest + cut + 1 if more else rest
        self.turns += 1
        stamp = timestamp(self._mux.clock())
        batch = memoryview(data)[:end]
        lines = data.count(b"\n", 0, end)
        rendered = render_batch(batch, lines, stamp, self._table)
        if rendered is None:
            self._render_odd([(each, False) for each in data[: end - 1].split(b"\n")], stamp)
        else:
            self.counts["lines"] += lines
            self._mux.write_rendered(rendered)
        batch.release()
        return offset + end

    def _render_odd(self, lines: list[tuple[bytes, bool]], stamp: str | None = None) -> None:
        """Each line on its own, in order (a batch that holds one the pattern does not take)."""
        stamp = stamp or timestamp(self._mux.clock())
        parts = []
        for data, cut in lines:
            try:
                parts.append(render_line(data, stamp, self._table, self._dynos, cut))
            except ValueError as exc:
                self.counts["unparsed"] += 1
                log.warning("router.unparsed", error=str(exc), size=len(data))
        self.counts["lines"] += len(parts)
        self._mux.write_rendered(b"".join(parts))

    def _later(self, delay: float) -> None:
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, self._again)

    def _again(self) -> None:
        self._timer = None
        self._turn()

    def _punch(self, written: float) -> None:
        """Give back the blocks of every line the log has written (its position ``written``):
        a hole, where the next dokuend starts."""
        done = 0
        while done < len(self._marks) and self._marks[done][0] <= written:
            done += 1
        upto = self._marks[done - 1][1] if done else self._punched
        if upto <= self._punched:
            del self._marks[:done]
            return
        if self._punches:
            try:
                punch(self._fd, self._punched, upto - self._punched)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    # (ENOSPC: ext4 may need a block to split an extent.) The marks stay:
                    # the next turn punches from the same place, and a restart before it
                    # shows these lines again rather than losing any.
                    if self.problem is None:
                        log.warning("router.punch_failed", error=str(exc))
                    self.problem = f"read lines not freed ({exc.strerror}): they take space"
                    return
                self._punches = False
                log.warning("router.no_holes", path=str(self.path), fix="renamed at 16 MiB")
            else:
                if self.problem is not None and self.problem.startswith("read lines not"):
                    self.problem = None  # freed again: the space is back
        del self._marks[:done]
        self._punched = upto

    def _check_place(self) -> None:
        """Something was put at the file's name (root: a logrotate, a link, a FIFO) or it
        was deleted: read the file out, clear the name (nothing at it is followed), make
        the file again and have nginx reopen it (HUP), as a rename does (``_rotate``)."""
        if self._fd < 0 or (what := logplace.standing(self.path, self._inode)) is None:
            return
        if what == logplace.NOTHING and not self.path.parent.is_symlink():
            # Deleted (a rm -rf of nginx/, say, which a new file would make fail): nginx and
            # dokuend still share the file; the driver makes it again with the rest.
            return
        log.warning("router.displaced", path=str(self.path), what=what)
        self._mux.event("nginx", f"{self.path} was {what}: reading a new file in its place")
        try:
            if what not in (logplace.OTHER_FILE, logplace.NOTHING):
                logplace.clear(self.path)
            self._reopen()
        except OSError as exc:  # tried again at the next change in the directory
            self.problem = f"router lines may be lost: {self.path} was {what} ({exc.strerror})"
            log.error("router.unavailable", problem=self.problem)
        else:
            if self.problem is not None and self.problem.startswith("router lines may be"):
                self.problem = None

    def _reopen(self) -> None:
        """Read the file at its name from now on (made if need be), the one before it to
        its end while nginx's old workers write to it, and tell nginx (HUP)."""
        self.prepare()
        if (master := self._master()) is not None:
            signal_master(master, self.path.parent.parent, signal.SIGHUP)

    def _rotate(self) -> None:
        """Where holes cannot be punched: rename the file, make a new one and reload nginx
        (its old workers write what they hold to the old one as they quit)."""
        master = self._master()
        if master is None:
            return
        os.replace(self.path, self.path.with_name("access.log.old"))
        self._reopen()

    def _retire(self) -> None:
        """The file read so far becomes the old one, read to its end for ``OLD_KEPT``
        seconds; the one before it, no longer written, is read out and closed."""
        if self._old is not None:
            self._read_old()
        if self._old is not None:
            os.close(self._old[0])
        self._old = (self._fd, self._offset, time.monotonic())
        self._fd = -1

    def _read_old(self) -> None:
        assert self._old is not None
        fd, offset, since = self._old
        read = self._read(fd, offset)
        if read is not None:
            self._old = (fd, read, since)
        elif time.monotonic() - since > OLD_KEPT:
            os.close(fd)
            self._old = None
            with contextlib.suppress(OSError):
                self.path.with_name("access.log.old").unlink()
