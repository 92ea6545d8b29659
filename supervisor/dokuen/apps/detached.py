"""``run:detached``: one-off processes that run in the background, their output in the
unified log as ``APP[run.N]``, listed by ``ps`` as ``run.N`` until they exit. They never
restart; ``stop`` of the app and ``ps:stop APP run.N`` end them (SIGTERM to the group,
SIGKILL after the app's stop timeout), and so does the app's end (destroy, dokuend
stopping). ``DetachedRuns`` is their task group, held in the app's own."""

import contextlib
import fcntl
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from dokuen.apps.attach import Attached
from dokuen.errors import NotFound
from dokuen.isolate.cgroups import Group, measure
from dokuen.names import not_found
from dokuen.supervise.clock import Clock
from dokuen.supervise.ending import Child
from dokuen.supervise.formation import ProcessSpec
from dokuen.supervise.keeper import F_SETPIPE_SZ, PIPE_SIZE
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.process import ProcessState, Spawner, describe_exit

Launch = Callable[[Attached], Awaitable[int]]  # runs the one-off with the attachment


class _ToLog:
    """Joins one detached run to the unified log and to ``ps``."""

    def __init__(
        self,
        mux: LogMux,
        clock: Clock,
        grace: float,
        started: Callable[["_ToLog"], None],
    ) -> None:
        self._mux = mux
        self._clock = clock
        self._grace = grace
        self._started = started
        self.spec: ProcessSpec | None = None
        self.pid: int | None = None
        self.port: int | None = None
        self.cgroup: Group | None = None
        self.since = 0.0
        self.state = ProcessState.STARTING

    def spawner(self, spawner: Spawner) -> Spawner:
        async def spawn(command: str, env: Mapping[str, str], cwd: Path, **options: Any) -> Child:
            self.port = int(env["PORT"]) if env.get("PORT", "").isdigit() else None
            self.cgroup = options.get("cgroup")  # where its cpu and memory are counted
            return await spawner(command, env, cwd, **options)

        return spawn

    async def relay(self, child: Child, spec: ProcessSpec) -> int:
        """Its output into the unified log, read by the intake as a Procfile process's is
        (the same framing, partial lines and bursts), until its end; then its status."""
        self.spec, self.pid, self.since = spec, child.pid, self._clock.now()
        self.state = ProcessState.RUNNING
        self._started(self)

        def lines(block: bytes, stamp: str | None) -> None:
            self._mux.write_block(spec.app, spec.name, block, stamp)

        if (outlet := child.outlet()) is not None:
            # A FIFO's size, as a Procfile process has: the intake reads a fast writer
            # once a turn (every 5 ms), and 64 KiB a turn would hold it to 13 MB/s.
            with contextlib.suppress(OSError):
                fcntl.fcntl(outlet.fd, F_SETPIPE_SZ, PIPE_SIZE)
        try:
            await self._mux.intake.pump(child, lines)
            return await child.wait()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):  # asked to stop: the Procfile's way
                self.state = ProcessState.STOPPING
                child.signal_group(signal.SIGTERM)
                status = -signal.SIGKILL
                with anyio.move_on_after(self._grace):
                    status = await child.wait()
                self._mux.event(spec.app, f"{spec.name} stopped ({describe_exit(status)})")
            raise

    def close(self) -> None:
        pass

    def info(self) -> dict[str, Any]:
        """The run as ``ps --json`` shows it (the keys of a Procfile process's row)."""
        assert self.spec is not None
        return {
            **self.spec.row(),
            "pid": self.pid,
            "port": self.port,
            "state": str(self.state),
            "restarts": 0,
            "uptime": round(self._clock.now() - self.since, 3),
            "detached": True,
            **measure(self.cgroup, self.pid),
        }


class DetachedRuns:
    """An app's detached runs: their task group (``run``, a task of the app's group) and
    what ``ps`` and ``ps:stop`` see of them."""

    def __init__(self, mux: LogMux, clock: Clock) -> None:
        self._mux = mux
        self._clock = clock
        self._group: anyio.abc.TaskGroup | None = None
        self._running: dict[str, tuple[_ToLog, anyio.CancelScope, anyio.Event]] = {}

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Hold the runs' task group until cancelled (which stops every run)."""
        async with anyio.create_task_group() as group:
            self._group = group
            task_status.started()
            await anyio.sleep_forever()

    async def start(self, launch: Launch, grace: float) -> str:
        """Start a run in the background; return its name (``run.N``) once it started.

        Raises:
            DokuenError: it could not start (no release, no free port, a spawn failure).
        """
        if self._group is None:
            raise NotFound("the app is not running yet (try again in a moment)")
        name: str = await self._group.start(self._one, launch, grace)
        return name

    async def _one(
        self, launch: Launch, grace: float, *, task_status: anyio.abc.TaskStatus[str]
    ) -> None:
        done = anyio.Event()

        def started(run: _ToLog) -> None:
            assert run.spec is not None
            self._running[run.spec.name] = (run, scope, done)
            task_status.started(run.spec.name)

        attachment = _ToLog(self._mux, self._clock, grace, started)
        try:
            with anyio.CancelScope() as scope:
                await launch(attachment)
        finally:
            if attachment.spec is not None:
                self._running.pop(attachment.spec.name, None)
            done.set()

    def rows(self) -> list[dict[str, Any]]:
        return [run.info() for run, _scope, _done in self._running.values()]

    async def stop(self, name: str | None = None) -> list[str]:
        """Stop one run (``run.N``) or every run; wait until they are gone; their names.

        Raises:
            NotFound: no detached run of that name is running.
        """
        if name is not None and name not in self._running:
            raise not_found("detached run", name, self._running)
        chosen = [name] if name is not None else list(self._running)
        waits = []
        for each in chosen:
            _run, scope, done = self._running[each]
            scope.cancel()
            waits.append(done)
        for done in waits:
            await done.wait()
        return chosen
