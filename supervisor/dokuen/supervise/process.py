"""One process slot's life: spawn, pump output into the unified log, restart with backoff,
and stop the whole process tree."""

import contextlib
import signal
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

from dokuen.errors import DokuenError
from dokuen.events import get_logger
from dokuen.isolate.cgroups import Group
from dokuen.supervise.clock import Clock
from dokuen.supervise.ending import Child, Ending
from dokuen.supervise.health import HealthCheck, serving
from dokuen.supervise.intake import PARTIAL_LINE_DELAY, READ_SIZE, Pipe
from dokuen.supervise.keeper import AdoptedChild, Keeper
from dokuen.supervise.latch import Latch
from dokuen.supervise.lines import last_lines
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.parking import Parking
from dokuen.supervise.ports import PortPool
from dokuen.supervise.restart import Run, next_delay
from dokuen.supervise.slotconfig import STUCK, ProcessState, SlotConfig, Spawner, describe_exit

__all__ = [
    "PARTIAL_LINE_DELAY",
    "READ_SIZE",
    "STUCK",
    "Child",
    "ProcessSlot",
    "ProcessState",
    "SlotConfig",
    "Spawner",
    "describe_exit",
]

log = get_logger()

RECENT = 10  # lines a slot keeps for a failure report
DRAIN_AFTER_EXIT = 0.5  # seconds to read what is left in the pipe once the group is gone


class ProcessSlot:
    """Keeps one process of the formation running until it is stopped.

    ``run`` is the slot's task (start it with ``task_group.start``: a failure to spawn the
    first time reaches the caller); ``stop`` ends it and waits until the whole tree is gone.
    Given ``parking``, an idle process is watched by a callback and the task ends until
    the process exits or the slot stops (parking.py): then the slot is a task again.
    """

    def __init__(
        self,
        config: SlotConfig,
        *,
        ports: PortPool,
        mux: LogMux,
        spawner: Spawner,
        clock: Clock,
        port: int | None = None,
        on_change: Callable[[], None] = lambda: None,
        keeper: "Keeper | None" = None,
        parking: Parking | None = None,
    ) -> None:
        self._parking = parking
        self._parked: tuple[Child, Pipe, int] | None = None  # the process, its pipe, its pidfd
        self._halt = False  # stopped, or its pipe failed: every phase from now is cancelled
        self._keeper = keeper  # spawns with a FIFO and a record, so a new dokuend can adopt
        self._adopted: AdoptedChild | None = None
        self._on_change = on_change  # told of every state change (nginx's map follows them)
        self._state = ProcessState.STARTING
        self.config, self.spec = config, config.spec
        self._ports, self._mux, self._spawner, self._clock = ports, mux, spawner, clock
        self.port = port
        self.pid: int | None = None
        self.cgroup: Group | None = None  # the current life's
        self.restarts = 0
        self.started_at: float | None = None
        # Enough for the policy: its limit, and a doubling long at max_delay by 64 runs.
        self._runs: list[Run] = []
        self._keep_runs = max(64, (config.policy.limit or 0) + 1)
        self._scope: anyio.CancelScope | None = None  # the current phase's, while a task
        self._done = Latch()
        # Set once the first life passed its health check (or failed it: see `failure`).
        self.settled = Latch()
        self.failure: str | None = None
        self._recent: list[bytes] = []  # its last lines, for failure reports
        self._reported_start = False
        self.stuck: Child | None = None  # a process SIGKILL did not end (see ending.py)

    def adopt(self, child: "AdoptedChild") -> None:
        """Make ``child`` (a process an earlier dokuend left serving) this slot's first
        life: no spawn, no health check (it answered then and still runs), its own port."""
        self._adopted = child
        self.port = child.record.port
        if self.port is not None:
            self._ports.taken.add(self.port)

    @property
    def recent(self) -> list[str]:
        """Its last lines, decoded only when a failure report asks for them."""
        return [line.decode(errors="replace") for line in self._recent]

    @property
    def state(self) -> ProcessState:
        return self._state

    @state.setter
    def state(self, state: ProcessState) -> None:
        if state is not self._state:
            self._state = state
            self._on_change()

    def info(self) -> dict[str, Any]:
        """The slot as ``ps --json`` shows it."""
        uptime = None
        if self.started_at is not None and self.state is ProcessState.RUNNING:
            uptime = round(self._clock.now() - self.started_at, 3)
        return {
            **self.spec.row(),
            "pid": self.pid,
            "port": self.port,
            "state": str(self.state),
            "restarts": self.restarts,
            "uptime": uptime,
        }

    async def stop(self) -> None:
        """Stop the process (SIGTERM to its group, SIGKILL after the grace period) and wait."""
        self._abort()
        await self._done.wait()

    def _abort(self) -> None:
        """End the slot: cancel its task, or wake it parked into a task already cancelled."""
        self._halt = True
        if self._scope is not None:
            self._scope.cancel()
        self._wake()

    def _wake(self) -> None:
        """The parked process exited (its pidfd is readable), or the slot must stop: the
        rest of its life runs as a task in the app's group again."""
        if self._parked is not None and self._parking is not None:
            (child, pipe, fd), self._parked = self._parked, None
            self._parking.unpark(fd, self._wake)
            self._parking.tasks.start_soon(self._run, anyio.TASK_STATUS_IGNORED, (child, pipe))

    def _park(self, child: Child, pipe: Pipe) -> bool:
        """Leave ``child`` to callbacks (its pipe's already, its pidfd's now) and end the
        task; False when it cannot (no parking, no pidfd, a stop or a shutdown under way)."""
        parking, fd = self._parking, child.exit_fd()
        if parking is None or fd is None or self._halt or not parking.park(fd, self._wake):
            return False
        self._parked = (child, pipe, fd)
        return True

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        await self._run(task_status, None)

    async def _run(
        self, task_status: anyio.abc.TaskStatus[None], parked: tuple[Child, Pipe] | None
    ) -> None:
        """One stretch of the slot's life as a task: to its end, or until it parks."""
        self._scope = scope = anyio.CancelScope()
        if self._halt:
            scope.cancel()
        parks = False
        try:
            with scope:
                parks = await self._supervise(task_status, parked)
        except Exception:
            if not self._reported_start:
                raise  # the first spawn failed: the caller reports it
            # A bug here must not take every other app down with it: this slot ends,
            # loudly, and the rest of the daemon carries on.
            log.exception("process.supervisor_failed", app=self.spec.app, proc=self.spec.name)
            self._mux.event(
                self.spec.app, f"{self.spec.name} supervisor failed (see dokuend's log)"
            )
        finally:
            self._scope = None
            if not parks:
                self._end()

    def _end(self) -> None:
        if self.port is not None:
            self._ports.release(self.port)
        self.state = ProcessState.STUCK if self.stuck else ProcessState.STOPPED
        self.port = None
        if self.stuck is None:
            self.pid = None
        self._done.set()

    async def reap(self) -> None:
        """Wait until the kernel ends a stuck process at last, then say so."""
        if self.stuck is not None:
            status = await self.stuck.wait()
            self._event(f"(stuck) is gone at last ({describe_exit(status)})", "process.unstuck")
            self.stuck, self.pid = None, None
            self.state = ProcessState.STOPPED

    async def _supervise(
        self, task_status: anyio.abc.TaskStatus[None], parked: tuple[Child, Pipe] | None
    ) -> bool:
        """Keep the process running, from a parked life's end when ``parked``; True when
        it parks (``_park``), and only cancellation ends it otherwise."""
        while True:
            if parked is not None:
                (child, pipe), parked = parked, None
                assert self.started_at is not None
                started, status = self.started_at, await self._live(child, pipe)
            else:
                self.state = ProcessState.STARTING
                try:
                    child = await self._spawn()
                except (OSError, DokuenError) as exc:  # no /bin/sh, no cwd, no free port
                    if not self._reported_start:
                        raise
                    self._event(f"failed to start: {exc}", "process.spawn_failed", error=str(exc))
                    status, started = 127, self._clock.now()
                else:
                    if not self._reported_start:
                        task_status.started()
                        self._reported_start = True
                    started, status = self._clock.now(), await self._live(child, None)
            if status is None:
                return True
            exited = self._clock.now()
            self._runs.append(Run(started, exited))
            del self._runs[: -self._keep_runs]
            self.pid = None
            if self.config.health is not None and not self.settled.is_set():
                self._fail(f"{describe_exit(status)} before it answered")
            delay = next_delay(self._runs, self.config.policy)
            if delay is None:
                self.state = ProcessState.CRASHED
                if self.port is not None:  # it may stay down for good: free its port
                    self._ports.release(self.port)
                    self.port = None
                limit = self.config.policy.limit
                self._event(
                    f"{describe_exit(status)}; crashed after {limit} fast failures in a row, "
                    f"not restarting (dokuenctl restart {self.spec.app} {self.spec.name})",
                    "process.crashed",
                    status=status,
                )
                await anyio.sleep_forever()
                continue  # not reached: only cancellation ends a crashed slot
            self.state = ProcessState.BACKOFF
            self._event(
                f"{describe_exit(status)}, restarting in {delay:g}s",
                "process.exited",
                status=status,
                delay=delay,
            )
            self.restarts += 1
            await self._clock.sleep(delay)

    async def _spawn(self) -> Child:
        if self._adopted is not None:
            kept, self._adopted = self._adopted, None
            self.pid, self.cgroup, self.started_at = kept.pid, kept.cgroup, self._clock.now()
            self.state = ProcessState.RUNNING
            self.settled.set()
            self._event(f"adopted, pid {kept.pid}, port {self.port}", "process.adopted")
            return kept
        if self.port is not None and self.port in self._ports.taken:
            if self._ports.is_free(self.port):
                pass  # ours, and nothing else took it: the same port again
            else:
                self._ports.release(self.port)
                self.port = self._ports.allocate(self.port)
        else:  # first start, or a port handed over by the slot this one replaces
            self.port = self._ports.allocate(self.port)
        self.cgroup = self.config.cgroup() if self.config.cgroup else None
        env = self.config.environment(self.port)
        child: Child
        if self._keeper is not None:
            meta = {"app": self.spec.app, "name": self.spec.name, "port": self.port}
            child = await self._keeper.spawn(
                self.spec.command,
                env,
                self.config.cwd,
                user=self.config.user,
                cgroup=self.cgroup,
                meta={**meta, "release": self.config.release},
            )
        else:
            child = await self._spawner(
                self.spec.command, env, self.config.cwd, user=self.config.user, cgroup=self.cgroup
            )
        self.pid = child.pid
        self.started_at = self._clock.now()
        self.state = ProcessState.RUNNING if self.config.health is None else ProcessState.STARTING
        self._event(f"started, pid {child.pid}, port {self.port}", "process.started", pid=child.pid)
        return child

    async def _live(self, child: Child, pipe: Pipe | None) -> int | None:
        """Run one life of the process (the rest of a parked one, given its ``pipe``);
        return its exit status, or None when it parks. On cancellation, stop it. The
        intake's callbacks read its pipe, with no task of its own."""
        if pipe is None:
            pipe = self._mux.intake.watch(child, self._lines)
            if pipe is not None:  # the intake failed: the slot ends (run() says so), as stops do
                pipe.failed = self._abort
                if self.config.health is None and self._park(child, pipe):
                    return None
        pumped = Latch() if pipe is None else pipe.ended
        # A pump (shielded: a stop must not cut off its last lines) for a child with no fd.
        pump_scope = anyio.CancelScope(shield=True) if pipe is None else None
        health = self.config.health
        async with (
            anyio.create_task_group() if pipe is None or health else contextlib.nullcontext()
        ) as tg:
            if tg is not None and pump_scope is not None:
                tg.start_soon(self._pump, child, pump_scope, pumped)
            if tg is not None and health is not None:
                tg.start_soon(self._check_health, health, child)
            status: int | None = None
            try:
                status = await child.wait()
                if tg is not None:  # exited while booting: its check fails now, not later
                    tg.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    stopping = status is None
                    ending = Ending(self.spec.app, self.spec.name, self._clock, self._event)
                    if status is None:
                        self.state = ProcessState.STOPPING
                        status = await ending.terminate(child, self.config.stop_timeout)
                        if status is None:  # not even SIGKILL ends it: left to the kernel
                            self.stuck = child
                            status = -signal.SIGKILL
                    else:  # it exited: whatever it left in its group goes too
                        await ending.clean_group(child, self.config.stop_timeout)
                    with anyio.move_on_after(DRAIN_AFTER_EXIT):
                        await pumped.wait()
                    if pump_scope is not None:
                        pump_scope.cancel()
                        await pumped.wait()
                    elif pipe is not None:  # what is in it now is read, before it is closed
                        self._mux.intake.close(pipe)
                    if self.cgroup is not None and self.cgroup.oom_kills():
                        self._event("out of memory (DOKUEN_MEMORY_LIMIT): killed", "process.oom")
                    await child.aclose()
                    if self.stuck is not None:
                        self._event(STUCK, "process.stuck")
                    elif stopping:  # after its last lines, not before them
                        self._event(
                            f"stopped ({describe_exit(status)})", "process.stopped", status=status
                        )
                if pipe is not None and pipe.error is not None:  # not after: a cancel hides it
                    raise pipe.error
        assert status is not None  # set by wait() or, on a stop, by _terminate()
        return status

    async def _check_health(self, health: HealthCheck, child: Child) -> None:
        """Probe the new process until it answers from its own port (then it is RUNNING:
        nginx may send it requests). If another process holds the port, or the boot
        timeout passes, it is killed, as Heroku does on a boot timeout, and restarted with
        backoff like any process that exits."""
        assert self.port is not None
        reason = await serving(health, self.port, child.pid, self.spec.name, self.config.user)
        if reason is None:
            self.state = ProcessState.RUNNING
            self._event(f"answers {health.describe()} on port {self.port}", "process.healthy")
            self.settled.set()
            return
        if self.settled.is_set():  # a later life: nobody waits on it, so say it here
            self._event(f"{reason}, killing it", "process.boot_timeout")
        else:
            self._fail(reason)
        child.signal_group(signal.SIGKILL)

    def _fail(self, reason: str) -> None:
        if not self.settled.is_set():
            self.failure = reason
            self._event(f"failed its health check: {reason}", "process.unhealthy")
            self.settled.set()

    async def _pump(self, child: Child, scope: anyio.CancelScope, pumped: Latch) -> None:
        try:
            with scope:
                await self._mux.intake.pump(child, self._lines)
        finally:
            pumped.set()

    def _lines(self, block: bytes, stamp: str | None) -> None:
        self._recent = (self._recent + last_lines(block, RECENT))[-RECENT:]
        self._mux.write_block(self.spec.app, self.spec.name, block, stamp)

    def _event(self, message: str, event: str, **fields: object) -> None:
        self._mux.event(self.spec.app, f"{self.spec.name} {message}")
        fields = {"pid": self.pid, "port": self.port, **fields}
        log.info(event, app=self.spec.app, proc=self.spec.name, **fields)
