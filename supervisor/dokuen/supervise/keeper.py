"""Processes that outlive their dokuend: each one's output goes to a named pipe (FIFO)
instead of an anonymous pipe, and each one is written down (record.py), so that a dokuend
started after a ``kill -9`` or a re-exec adopts it, output and all.

Why a FIFO: an anonymous pipe's read end dies with the daemon, and then the process gets
EPIPE (or SIGPIPE) on its next line. The child gets the FIFO opened read-write, so the pipe
always has a reader (itself: it never gets EPIPE) and the kernel keeps whatever it writes
while no daemon reads (up to the pipe's size, raised to ``PIPE_SIZE``; past that the
process blocks on its writes, it loses nothing). The daemon reads it ``O_RDONLY|O_NONBLOCK``
and a new daemon opens it again by its path and drains what waited. End of file comes when
the last writer (the process and whatever inherited its output) is gone. No systemd is
needed (its FDSTORE would keep anonymous pipes only while systemd itself runs us).
"""

import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import psutil

from dokuen.events import get_logger
from dokuen.isolate.cgroups import Cgroups, Group
from dokuen.supervise import carry, handed, reaper
from dokuen.supervise.intake import Outlet
from dokuen.supervise.readiness import wait_readable
from dokuen.supervise.record import ProcessRecord, Records, ensure_private, start_time
from dokuen.supervise.spawn import LoopChild, OsSpawner, PidfdChild, _OsChild
from dokuen.supervise.streams import Stdio

log = get_logger()

PIPE_SIZE = 1 << 20  # the default /proc/sys/fs/pipe-max-size
# An adopted process that is not our child: its exit status went to its new parent (init).
UNKNOWN_STATUS = 255
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
TAIL_DELAY = 0.1  # seconds a line without its newline is held back for the rest of it
FROZEN_POLL = 0.05


class Fifo:
    """The daemon's read end of one process's named pipe. It hands out whole lines; a line
    still without its newline is held back (``TAIL_DELAY`` at most, then handed out as it
    is) and, on a re-exec, saved beside the FIFO (``.carry``) for the next image, so a
    line cut in two by the hand-over is never split in the log."""

    def __init__(self, path: Path, reader: int) -> None:
        self.path, self._reader, self._tail = path, reader, b""

    @property
    def carry_file(self) -> Path:
        return self.path.with_name(self.path.name + ".carry")

    @classmethod
    def make(cls, path: Path) -> "tuple[Fifo, int]":
        """A new FIFO at ``path``: the daemon's reader, and the read-write end for the child
        (the caller closes it once the child has it)."""
        os.mkfifo(path, 0o600)
        child_end = reader = -1
        try:
            child_end = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            with contextlib.suppress(OSError):  # a smaller pipe still works
                fcntl.fcntl(child_end, F_SETPIPE_SZ, PIPE_SIZE)
            reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            if child_end >= 0:
                os.close(child_end)
            path.unlink()
            raise
        return cls(path, reader), child_end

    @classmethod
    def reopen(cls, path: Path, generation: str | None = None) -> "Fifo | None":
        """The reader of a FIFO a dead daemon left; None when it is gone. Its carry file
        goes in front of what the pipe holds only when it is marked with ``generation``
        (of the hand-over this image follows: carry.py)."""
        reader = handed.claim(str(path))  # the last image's: it kept what nobody read
        try:
            if reader is None:
                reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            fifo = cls(path, reader)
        except OSError:
            return None
        fifo._tail = carry.take(fifo.carry_file, generation)
        return fifo

    def drain(self) -> bytes:
        """All that is left of a FIFO whose process is gone (its carried line first); then
        it is closed and removed."""
        data = self.release()
        with contextlib.suppress(OSError):
            while chunk := os.read(self._reader, 1 << 16):
                data += chunk
        self.close()
        return data

    def save_tail(self, generation: str) -> None:
        """Before a re-exec: the line held back goes to the carry file (carry.py)."""
        if self._tail:
            carry.save(self.carry_file, generation, self._tail)

    @property
    def held(self) -> bool:
        """True while a line without its newline is held back."""
        return bool(self._tail)

    def take(self, data: bytes, max_bytes: int) -> bytes:
        """The whole lines of ``data``, a read of at most ``max_bytes`` (with the line held
        back before it); what follows the last newline is held back, unless the read was
        full and has no newline at all (a line longer than a read goes on at once)."""
        if self._tail:
            data = self._tail + data
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) < max_bytes:
            self._tail = data
            return b""
        cut = cut or len(data)
        self._tail = data[cut:]
        return data[:cut]

    def release(self) -> bytes:
        """The line held back, handed out as it is (after ``TAIL_DELAY``, or at the end)."""
        data, self._tail = self._tail, b""
        return data

    def outlet(self, keeper: "Keeper") -> Outlet | None:
        """What the intake reads: the read end, the line held back, the keeper's freeze."""
        if self._reader < 0:
            return None
        return Outlet(self._reader, self, keeper.is_frozen)

    async def read(self, max_bytes: int, keeper: "Keeper") -> bytes:
        """The next whole lines (or a line held back for ``TAIL_DELAY``); b"" once no
        writer is left. Reads nothing while the keeper is frozen (a re-exec)."""
        while True:
            while keeper.frozen:  # what is not read yet stays in the pipe
                await anyio.sleep(FROZEN_POLL)
            if self._reader < 0:
                return b""
            try:
                data = os.read(self._reader, max_bytes)
            except BlockingIOError:
                if not self._tail:
                    await wait_readable(self._reader)
                    continue
                with anyio.move_on_after(TAIL_DELAY):
                    await wait_readable(self._reader)
                    continue
                if keeper.frozen:
                    continue
                return self.release()
            if not data:  # no writer left: the last bytes, then the end
                return self.release()
            lines = self.take(data, max_bytes)
            if lines:
                return lines

    def close(self) -> None:
        if self._reader >= 0:
            os.close(self._reader)
            self._reader = -1
        for path in (self.path, self.carry_file):
            with contextlib.suppress(OSError):
                path.unlink()


class KeptChild:
    """A child we spawned, its output on a FIFO, its record on disk while it lives."""

    def __init__(
        self,
        inner: "PidfdChild | LoopChild",
        fifo: Fifo,
        record: ProcessRecord,
        keeper: "Keeper",
    ) -> None:
        self.pid, self.inner, self.fifo, self.record = inner.pid, inner, fifo, record
        self._keeper = keeper

    def outlet(self) -> Outlet | None:
        return self.fifo.outlet(self._keeper)

    async def read(self, max_bytes: int) -> bytes:
        return await self.fifo.read(max_bytes, self._keeper)

    async def wait(self) -> int:
        return await self.inner.wait()

    def exit_fd(self) -> int | None:
        return self.inner.exit_fd()

    def signal_group(self, signum: int) -> None:
        self.inner.signal_group(signum)

    def group_alive(self) -> bool:
        return self.inner.group_alive()

    def leftovers(self, app: str, dyno: str) -> list[psutil.Process]:
        return self.inner.leftovers(app, dyno)

    async def aclose(self) -> None:
        self.fifo.close()
        self._keeper.fifos_open.discard(self.fifo)
        self._keeper.records.remove(self.record)
        await self.inner.aclose()


class AdoptedChild(_OsChild):
    """A process an earlier dokuend of this home started (or this one, before a re-exec),
    watched through a pidfd since it may not be our child any more."""

    def __init__(
        self, record: ProcessRecord, keeper: "Keeper", pidfd: int, cgroup: Group | None
    ) -> None:
        super().__init__(record.pid, keeper.spawner, cgroup)
        self.record, self._keeper, self._pidfd = record, keeper, pidfd
        self.fifo = (
            Fifo.reopen(Path(record.fifo), keeper.generation.taken()) if record.fifo else None
        )
        if self.fifo is not None:
            keeper.fifos_open.add(self.fifo)
        keeper.spawner.live.add(self.pid)  # ours again after a re-exec: the reaper keeps off

    def outlet(self) -> Outlet | None:
        return None if self.fifo is None else self.fifo.outlet(self._keeper)

    async def read(self, max_bytes: int) -> bytes:
        return b"" if self.fifo is None else await self.fifo.read(max_bytes, self._keeper)

    def exit_fd(self) -> int | None:
        return self._pidfd

    async def wait(self) -> int:
        await wait_readable(self._pidfd)  # it exited
        try:
            _, status = os.waitpid(self.pid, 0)  # noqa: ASYNC222 (a zombie: at once)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # init's child now: its status is init's to read
            code = UNKNOWN_STATUS
        self._keeper.spawner.live.discard(self.pid)
        return code

    def _candidates(self) -> list[psutil.Process]:
        return list(psutil.process_iter())  # not our descendants: any process may be one

    async def aclose(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._pidfd)
        if self.fifo is not None:
            self.fifo.close()
            self._keeper.fifos_open.discard(self.fifo)
        self._keeper.records.remove(self.record)
        await self._discard_cgroup()


class Keeper:
    """Spawns kept children and adopts recorded ones, for one home's run directory."""

    def __init__(self, run: Path, spawner: OsSpawner) -> None:
        self.run = run
        self.records = Records(run / "processes")
        self.fifos = run / "fifo"
        self.spawner = spawner
        self.frozen = False  # set just before a re-exec: no more reads
        self.is_frozen = lambda: self.frozen  # one for every FIFO's outlet, not one each
        self.fifos_open: set[Fifo] = set()  # whose held-back lines a re-exec saves
        self.generation = carry.Generation(run)  # of the carry files left for this image

    async def spawn(
        self,
        command: str,
        env: dict[str, str],
        cwd: Path,
        *,
        user: int | None,
        cgroup: Group | None,
        meta: dict[str, Any],
    ) -> "KeptChild | PidfdChild | LoopChild":
        """Start ``command`` as the spawner does, its output on a new FIFO, and record it
        (``meta``: app, name, release, port). When no FIFO can be made (a full disk), on an
        anonymous pipe as before: it runs, it just cannot be adopted after a crash."""
        path = self.fifos / f"{meta['app']}.{meta['name']}.{time.monotonic_ns()}"
        try:
            ensure_private(self.run)
            ensure_private(self.fifos)
            fifo, child_end = Fifo.make(path)
        except OSError as exc:
            log.warning("fifo.unavailable", path=str(path), error=str(exc))
            return await self.spawner(command, env, cwd, user=user, cgroup=cgroup)
        try:
            inner = await self.spawner(
                command, env, cwd, user=user, cgroup=cgroup, stdio=Stdio(output=child_end)
            )
        except BaseException:
            fifo.close()
            raise
        finally:
            os.close(child_end)
        self.fifos_open.add(fifo)
        started = start_time(inner.pid)
        record = ProcessRecord(
            pid=inner.pid,
            start=started if started is not None else -1,
            cgroup=str(inner.cgroup.name) if inner.cgroup is not None else None,
            fifo=str(path),
            **meta,
        )
        self.records.write(record)
        return KeptChild(inner, fifo, record, self)

    def adopt(self, record: ProcessRecord, cgroups: Cgroups | None) -> AdoptedChild | None:
        """Take over the recorded process when it is still the very same one; else None
        (always without pidfds, on macOS: what a dead dokuend left is stopped there)."""
        if not hasattr(os, "pidfd_open"):
            return None
        try:
            pidfd = os.pidfd_open(record.pid)
        except OSError:
            return None
        # Checked after the pidfd is open: the pidfd now pins this process, not a reuse.
        if start_time(record.pid) != record.start:
            os.close(pidfd)
            return None
        group = None
        if record.cgroup is not None and cgroups is not None:
            group = Group(cgroups.layout, PurePosixPath(record.cgroup))
        return AdoptedChild(record, self, pidfd, group)

    def freeze(self) -> str:
        """Stop reading (before a re-exec) and save every line held back for the next image,
        marked with a new generation (returned)."""
        self.frozen = True
        try:
            ensure_private(self.run)
            generation = self.generation.begin()
        except OSError as exc:  # the lines then stay with this image, or die with it
            log.warning("fifo.carry_failed", path=str(self.generation.file), error=str(exc))
            return ""
        for fifo in self.fifos_open:
            fifo.save_tail(generation)
        return generation

    def hand(self, inheritable: bool = True) -> str:
        """The readers made inheritable for the next image (or not again): handed.py."""
        return handed.hand(
            ((f._reader, str(f.path)) for f in self.fifos_open if f._reader >= 0), inheritable
        )

    def leftover(self, record: ProcessRecord) -> bytes:
        """What a process that is gone wrote and no image read, then its FIFO goes."""
        fifo = Fifo.reopen(Path(record.fifo), self.generation.taken()) if record.fifo else None
        data = fifo.drain() if fifo is not None else b""
        self.forget(record)
        return data

    def thaw(self) -> None:
        """The re-exec failed: this image hands out the lines it saved itself, so their
        generation and carry files go (in that order), and it reads again."""
        self.generation.end()
        self.hand(inheritable=False)
        for fifo in self.fifos_open:
            carry.drop(fifo.carry_file)
        self.frozen = False

    def forget(self, record: ProcessRecord) -> None:
        """Drop the record and the FIFO of a process that is gone or was stopped."""
        self.records.remove(record)
        if record.fifo:
            for path in (record.fifo, record.fifo + ".carry"):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def stop(self, record: ProcessRecord, grace: float) -> bool:
        """Stop a recorded process that is not wanted (blocking: run it in a thread).
        SIGTERM to its group, SIGKILL after ``grace``. True if it was still running."""
        running = record.alive()
        if running:
            with contextlib.suppress(OSError):
                os.killpg(record.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _group_runs(record.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            with contextlib.suppress(OSError):
                os.killpg(record.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(record.pid, os.WNOHANG)
        self.forget(record)
        return running


def _group_runs(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False
    return any(reaper.in_group(p, pgid) for p in psutil.process_iter())
