"""One app: its processes (one slot each, all in the app's task group) and the operations
that change them: scale, restart, stop, start, config (deploys and rollbacks switch its
release through releasing.py)."""

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import anyio
import anyio.abc

from dokuen.apps import pending, resources
from dokuen.apps.detached import DetachedRuns
from dokuen.apps.runtime import Runtime
from dokuen.apps.slots import Slots, Target, check_room
from dokuen.apps.state import shown_formation, state_problem
from dokuen.deploy import releases
from dokuen.errors import DokuenError, NotFound, explain
from dokuen.names import check_domain, not_found
from dokuen.proxy.nginx import DEFAULT_BODY_SIZE, Site, check_body_size
from dokuen.store import AppDir
from dokuen.supervise.envdir import protect, read_envdir
from dokuen.supervise.formation import ProcessSpec, in_procfile_order, parse_scale
from dokuen.supervise.parking import Parking
from dokuen.supervise.process import STUCK, ProcessSlot, ProcessState
from dokuen.supervise.procfile import Procfile


def _nothing() -> None:
    pass


class App:
    """Owns one app's slots. Every operation holds the app's lock, so they never interleave."""

    def __init__(self, directory: AppDir, runtime: Runtime) -> None:
        self.dir = directory
        self.name = directory.name
        self.runtime = runtime
        self.slots = Slots(directory, runtime)
        self.pending: Target | None = None  # a switch under way: what it starts, not proven
        self._procfiles: dict[str, Procfile] = {}  # the current release's (releases.py)
        self._lock = anyio.Lock()
        self._building = anyio.Lock()  # one build at a time; other operations go on
        self._preparing: set[anyio.CancelScope] = set()  # deploys not yet switching
        self._closed = False
        self.runs = 0  # one-off processes started, to number them run.N
        self.detached = DetachedRuns(runtime.mux, runtime.clock)  # run:detached
        self.failure: str | None = None  # why it could not be restored or started
        self._scope = anyio.CancelScope()

    # -- the app's task --------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Hold the app's task group until cancelled; cancellation stops every process."""
        with self._scope:
            async with anyio.create_task_group() as task_group:
                self.slots.task_group = task_group
                self.slots.parking = parking = Parking(task_group)
                await task_group.start(self.detached.run)
                task_status.started()
                try:
                    await anyio.sleep_forever()
                finally:  # idle slots become tasks again, which this cancellation stops
                    parking.close()

    async def close(self) -> None:
        """Stop every process, then end the app's task; later operations raise NotFound."""
        for deploy in self._preparing:  # builds and release phases under way are called off
            deploy.cancel()
        async with self._building:  # and have cleaned up after themselves
            pass
        async with self.exclusive():
            self._closed = True
            await self.slots.stop(list(self.slots.live.values()))
            await self.detached.stop()  # gone before the app's files and cgroup go
            resources.discard(self.runtime.cgroups, self.name)
        self._scope.cancel()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the app's lock; refuse when the app was destroyed while we waited for it."""
        async with self._lock:
            if self._closed:
                raise NotFound(f"app {self.name!r} was destroyed")
            yield

    @contextlib.asynccontextmanager
    async def building(self) -> AsyncIterator[None]:
        """Hold the build lock (one build at a time); refuse when the app was destroyed."""
        async with self._building:
            if self._closed:
                raise NotFound(f"app {self.name!r} was destroyed")
            yield

    @property
    def deploying(self) -> bool:
        """Whether a build or a release phase is under way (or waits for its turn)."""
        return bool(self._preparing) or self._building.locked()

    @contextlib.contextmanager
    def preparing(self) -> Iterator[anyio.CancelScope]:
        """The scope of a deploy until it switches (build, release phase); ``close`` cancels it."""
        with anyio.CancelScope() as scope:
            self._preparing.add(scope)
            try:
                yield scope
            finally:
                self._preparing.discard(scope)

    async def restore(self) -> None:
        """Bring the app back to its formation; DokuenError when one of its files is bad."""
        # One trip to a worker thread, not three: a restore of 200 apps waits on them all.
        undone, problem = await anyio.to_thread.run_sync(_prepare, self.dir)
        if undone is not None:  # the last dokuend died in a switch: back on the proven state
            self.runtime.mux.event(self.name, f"{undone} was not proven: {pending.INTERRUPTED}")
        if problem:
            raise DokuenError(problem)
        if not self.active:
            return
        async with self.exclusive():
            await self.converge(replace=lambda _spec: False)

    # -- views -----------------------------------------------------------------------

    def processes(self) -> list[dict[str, Any]]:
        rows = [{**slot.info(), **resources.usage(slot)} for slot in self._ordered_slots()]
        return rows + [slot.info() for slot in self.slots.stuck]

    def stuck(self) -> list[str]:
        """A line for each stopped process that SIGKILL did not end (left to the kernel)."""
        return [f"{self.name} {s.spec.name} (pid {s.pid}) {STUCK}" for s in self.slots.stuck]

    def summary(self) -> dict[str, Any]:
        """The app at a glance; ``broken`` names the file that keeps it down and the fix."""
        release = releases.current_release(self.dir)
        states = [slot.state for slot in self.slots.live.values()]
        return {
            "name": self.name,
            "release": release.name if release else None,
            "stopped": self.dir.stopped,
            "broken": state_problem(self.dir) or self.failure,
            "formation": shown_formation(self.dir),
            "processes": len(states),
            "running": sum(state is ProcessState.RUNNING for state in states),
            "crashed": sum(state is ProcessState.CRASHED for state in states),
        }

    @property
    def active(self) -> bool:
        """Whether its processes should run: it is not stopped and has a release."""
        return not self.dir.stopped and releases.current_release(self.dir) is not None

    def config(self) -> dict[str, str]:
        return read_envdir(self.dir.env)

    def hosts(self) -> list[str]:
        """``APP.DOKUEN_DOMAIN`` first, then the app's own domains."""
        # Checked again on the way out: the file may have been edited by hand.
        extra = [check_domain(domain) for domain in self.dir.read_domains()]
        return [f"{self.name}.{self.runtime.settings.domain}", *extra]

    def site(self) -> Site:
        """The app as nginx sees it: its host names and its running web processes."""
        webs = sorted(
            (slot for slot in self.slots.live.values() if slot.spec.type == "web"),
            key=lambda slot: slot.spec.index,
        )
        serving = [s for s in webs if s.state is ProcessState.RUNNING and s.port]
        try:
            size = check_body_size(
                self.config().get("DOKUEN_CLIENT_MAX_BODY_SIZE", DEFAULT_BODY_SIZE)
            )
        except DokuenError:  # refused at config:set; a hand-edited env dir gets the default
            size = DEFAULT_BODY_SIZE
        ports, dynos = tuple(s.port or 0 for s in serving), tuple(s.spec.name for s in serving)
        return Site(self.name, tuple(self.hosts()), ports, size, dynos, self.dir.maintenance)

    async def set_domains(self, domains: Callable[[], list[str]]) -> None:
        """Write the app's domains as ``domains()`` gives them once the app's lock is held
        (it may raise to refuse)."""
        async with self.exclusive():
            self.dir.write_domains(domains())
            self.runtime.proxy_changed()

    # -- operations ------------------------------------------------------------------

    async def scale(self, args: Iterable[str]) -> dict[str, int]:
        """Apply ``TYPE=N`` (or ``TYPE+N``, ``TYPE-N``) changes to the formation; return the
        whole new formation in Procfile order. No changes: the formation as it is."""
        args = list(args)
        async with self.exclusive():
            procfile = self._procfile()
            current = self.dir.read_formation()
            if not args:
                return in_procfile_order(current, procfile)
            changes = parse_scale(args, procfile, current)
            formation = in_procfile_order({**current, **changes}, procfile)
            check_room(self.runtime.ports, formation, len(self.slots.live))
            shown = ", ".join(f"{t}={n}" for t, n in changes.items())
            target = self.target()
            if self.dir.stopped or target is None:
                self.dir.write_formation(formation)
            else:  # pending until the new processes pass; then it is written
                self.pending = dataclasses.replace(target, formation=formation)
                try:
                    await self.converge(replace=lambda _spec: False, gate=True)
                    await anyio.to_thread.run_sync(self.dir.write_formation, formation)
                except (DokuenError, OSError) as exc:
                    self.pending = None
                    with anyio.CancelScope(shield=True), contextlib.suppress(DokuenError):
                        await self.converge(replace=lambda _spec: False)
                    self.runtime.mux.event(self.name, f"scaling {shown} failed: {exc}")
                    if isinstance(exc, OSError):
                        raise
                    kept = ", ".join(f"{t}={n}" for t, n in current.items()) or "empty"
                    raise DokuenError(
                        f"scaling {self.name} {shown} failed (the formation stays {kept}): {exc}"
                    ) from None
                finally:
                    self.pending = None
            self.runtime.mux.event(self.name, f"scaled {shown}")
            return formation

    async def restart(self, target: str | None) -> list[str]:
        """Restart every process, a type's (``web``) or one (``web.2``); return their names."""
        async with self.exclusive():
            self._procfile()
            chosen = self._select(target)
            names = {slot.spec.name for slot in chosen}
            self.runtime.mux.event(self.name, f"restarting {target or 'all processes'}")
            self.dir.set_stopped(False)
            await self.converge(replace=lambda spec: spec.name in names)
            self.failure = None
            return [slot.spec.name for slot in chosen]

    async def stop(self) -> None:
        async with self.exclusive():
            self.dir.set_stopped(True)
            self.runtime.mux.event(self.name, "stopping all processes")
            await self.slots.stop(list(self.slots.live.values()))

    async def start(self) -> None:
        async with self.exclusive():
            self._procfile()
            self.dir.set_stopped(False)
            await self.converge(replace=lambda _spec: False)
            self.failure = None

    # -- the machinery ---------------------------------------------------------------

    def _procfile(self) -> Procfile:
        procfile = releases.current_procfile(self.dir, self._procfiles)
        if procfile is None:
            hint = f"deploy it: dokuenctl deploy {self.name} DIR"
            raise NotFound(f"app {self.name!r} has no release yet ({hint})")
        return procfile

    def _ordered_slots(self) -> list[ProcessSlot]:
        """The slots in the Procfile's order of types, then by index."""
        try:
            order = {t: i for i, t in enumerate(self._procfile().types)}
        except DokuenError:  # no release, or a bad one: alphabetical is the best left
            order = {}
        return sorted(
            self.slots.live.values(),
            key=lambda slot: (
                order.get(slot.spec.type, len(order)),
                slot.spec.type,
                slot.spec.index,
            ),
        )

    def _select(self, target: str | None) -> list[ProcessSlot]:
        slots = self._ordered_slots()
        if target is None:
            return slots
        if "." in target:
            chosen = [slot for slot in slots if slot.spec.name == target]
        else:
            chosen = [slot for slot in slots if slot.spec.type == target]
        if not chosen:
            raise not_found(
                "process", target, [s.spec.name for s in slots] + [s.spec.type for s in slots]
            )
        return chosen

    def target(self) -> Target | None:
        """What the processes should run: a switch's pending target while one is under way,
        else the current release, formation and config (None before the first release)."""
        if self.pending is not None:
            return self.pending
        release = releases.current_release(self.dir)
        if release is None:
            return None
        return Target(release, self.dir.read_formation(), self.config())

    async def converge(self, replace: Callable[[ProcessSpec], bool], gate: bool = False) -> None:
        """Bring the processes to ``target()`` (``Slots.converge``); hold the app's lock."""
        await self.slots.converge(self.target(), replace, gate)


def _prepare(directory: AppDir) -> tuple[str | None, str | None]:
    """Before a restore (blocking): put back the proven state of a switch the last dokuend
    died in (its name), then check the app's files (the problem); when they read, protect
    the env dir an older dokuend made."""
    undone = pending.undo(directory)
    try:
        problem = state_problem(directory)
        if problem is None:
            protect(directory.env)
    except OSError as exc:  # said as restore_app says it, after the switch's undoing
        problem = explain(exc)
    return undone, problem
