"""One app: its processes (one slot each, all in the app's task group) and the operations
that change them: scale, restart, stop, start, config (deploys and rollbacks switch its
release through releasing.py)."""

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import anyio
import anyio.abc

from dokuen.apps import resources
from dokuen.apps.detached import DetachedRuns
from dokuen.apps.options import app_options
from dokuen.apps.runtime import Runtime
from dokuen.apps.state import shown_formation, state_problem
from dokuen.deploy import releases
from dokuen.errors import DokuenError, NotFound
from dokuen.names import check_domain, not_found
from dokuen.proxy.nginx import DEFAULT_BODY_SIZE, Site, check_body_size
from dokuen.store import AppDir
from dokuen.supervise.envdir import protect, read_envdir
from dokuen.supervise.environment import process_environment
from dokuen.supervise.formation import ProcessSpec, expand, in_procfile_order, parse_scale
from dokuen.supervise.process import ProcessSlot, ProcessState, SlotConfig
from dokuen.supervise.procfile import Procfile


def _nothing() -> None:
    pass


class App:
    """Owns one app's slots. Every operation holds the app's lock, so they never interleave."""

    def __init__(self, directory: AppDir, runtime: Runtime) -> None:
        self.dir = directory
        self.name = directory.name
        self.runtime = runtime
        self._slots: dict[str, ProcessSlot] = {}
        self._procfiles: dict[str, Procfile] = {}  # the current release's (releases.py)
        self._lock = anyio.Lock()
        self._building = anyio.Lock()  # one build at a time; other operations go on
        self._preparing: set[anyio.CancelScope] = set()  # deploys not yet switching
        self._closed = False
        self.runs = 0  # one-off processes started, to number them run.N
        self.detached = DetachedRuns(runtime.mux, runtime.clock)  # run:detached
        self.failure: str | None = None  # why it could not be restored or started
        self._scope = anyio.CancelScope()
        self._task_group: anyio.abc.TaskGroup | None = None

    # -- the app's task --------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Hold the app's task group until cancelled; cancellation stops every process."""
        with self._scope:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                await task_group.start(self.detached.run)
                task_status.started()
                await anyio.sleep_forever()

    async def close(self) -> None:
        """Stop every process, then end the app's task; later operations raise NotFound."""
        for deploy in self._preparing:  # builds and release phases under way are called off
            deploy.cancel()
        async with self._building:  # and have cleaned up after themselves
            pass
        async with self.exclusive():
            self._closed = True
            await self._stop_slots(list(self._slots.values()))
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
        if problem := await anyio.to_thread.run_sync(state_problem, self.dir):
            raise DokuenError(problem)
        await anyio.to_thread.run_sync(protect, self.dir.env)  # made by an older dokuend
        if not self.active:
            return
        async with self.exclusive():
            await self.converge(replace=lambda _spec: False)

    # -- views -----------------------------------------------------------------------

    def processes(self) -> list[dict[str, Any]]:
        return [{**slot.info(), **resources.usage(slot)} for slot in self._ordered_slots()]

    def summary(self) -> dict[str, Any]:
        """The app at a glance; ``broken`` names the file that keeps it down and the fix."""
        release = releases.current_release(self.dir)
        states = [slot.state for slot in self._slots.values()]
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
            (slot for slot in self._slots.values() if slot.spec.type == "web"),
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

    async def set_domains(self, domains: list[str]) -> None:
        async with self.exclusive():
            self.dir.write_domains(domains)
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
            self.dir.write_formation(formation)
            shown = ", ".join(f"{t}={n}" for t, n in changes.items())
            self.runtime.mux.event(self.name, f"scaled {shown}")
            if not self.dir.stopped:
                await self.converge(replace=lambda _spec: False)
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
            await self._stop_slots(list(self._slots.values()))

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
            self._slots.values(),
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

    async def converge(self, replace: Callable[[ProcessSpec], bool]) -> None:
        """Make the running slots match the current release and formation: stop what is
        not wanted, is crashed, or ``replace`` picks; start what is missing.

        Behind nginx, a serving web process that ``replace`` picks is swapped instead: its
        replacement starts beside it on a new port, and only once every replacement passes
        its health check does nginx switch to them and the old ones stop. If one fails, the
        new ones stop, the old ones keep serving, and DokuenError says why.
        """
        release = releases.current_release(self.dir)
        if release is None:
            return
        procfile = release.procfile()
        specs = expand(self.name, procfile, self.dir.read_formation())
        wanted = {spec.name: spec for spec in specs}
        make = self._slot_maker(release)
        doomed = [
            slot
            for name, slot in self._slots.items()
            if wanted.get(name) != slot.spec
            or slot.config.cwd != release.path
            or slot.state is ProcessState.CRASHED
            or replace(slot.spec)
        ]
        swapped = [
            slot
            for slot in doomed
            if self.runtime.proxied
            and slot.spec.type == "web"
            and slot.spec.name in wanted
            and slot.state is ProcessState.RUNNING
        ]
        stopped = [slot for slot in doomed if slot not in swapped]
        ports = {slot.spec.name: slot.port for slot in stopped}
        await self._stop_slots(stopped)
        if swapped:
            await self._swap(swapped, [make(wanted[old.spec.name], None) for old in swapped])
        async with self.runtime.proxy_batch():  # new web processes: one nginx reload
            fresh = []
            for spec in specs:
                if spec.name not in self._slots:
                    slot = make(spec, ports.get(spec.name))
                    self._slots[spec.name] = slot
                    try:
                        await self._start(slot)
                    except DokuenError:
                        del self._slots[spec.name]
                        raise
                    fresh.append(slot)
            for slot in fresh:
                if slot.config.health is not None:
                    await slot.settled.wait()

    def _slot_maker(
        self, release: releases.Release
    ) -> Callable[[ProcessSpec, int | None], ProcessSlot]:
        config = self.config()
        options = app_options(config, self.runtime.settings.stop_timeout)
        for problem in resources.apply_limits(self.runtime.cgroups, self.name, options):
            self.runtime.mux.event(self.name, problem)
        defaults = release.defaults(config)
        app_path, home = self.runtime.settings.app_path, self.dir.data
        user = self.runtime.isolation.runs_as(self.dir)

        def make(spec: ProcessSpec, port: int | None) -> ProcessSlot:
            def environment(port: int) -> dict[str, str]:
                return process_environment(spec, port, home, app_path, defaults, config)

            web = spec.type == "web"
            health = options.health if web and self.runtime.proxied else None
            cgroup = resources.placement(self.runtime.cgroups, self.name, spec.name)
            return ProcessSlot(
                SlotConfig(
                    spec,
                    release.path,
                    environment,
                    options.stop_timeout,
                    options.policy,
                    health,
                    user=user,
                    cgroup=cgroup,
                ),
                ports=self.runtime.ports,
                mux=self.runtime.mux,
                spawner=self.runtime.spawner,
                clock=self.runtime.clock,
                port=port,
                on_change=self.runtime.proxy_changed if web else lambda: None,
            )

        return make

    async def _start(self, slot: ProcessSlot) -> None:
        assert self._task_group is not None
        try:
            await self._task_group.start(slot.run)
        except DokuenError:
            raise
        except Exception as exc:  # no /bin/sh, a bad cwd, an environment Popen refuses
            raise DokuenError(f"cannot start {self.name} {slot.spec.name}: {exc}") from exc

    async def _swap(self, old: list[ProcessSlot], new: list[ProcessSlot]) -> None:
        """Zero downtime: start ``new`` beside ``old``, switch nginx once all pass, stop old."""
        started: list[ProcessSlot] = []
        try:
            for slot in new:
                await self._start(slot)
                started.append(slot)
            for slot in new:
                await slot.settled.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._stop_slots(started)
            raise
        failed = [slot for slot in new if slot.failure]
        if failed:
            await self._stop_slots(new)
            first = failed[0]
            last = "".join(f"\n    {line}" for line in first.recent) or " (none)"
            raise DokuenError(
                f"{first.spec.name} of the new processes {first.failure}; the old ones keep "
                f"serving. Its last lines:{last}"
            )
        for slot in new:
            self._slots[slot.spec.name] = slot
        self.runtime.proxy_changed()
        try:
            await self.runtime.proxy_sync()  # nginx sends new requests to the new processes
        except DokuenError:  # nginx kept the old config (a full disk): so do we
            self._slots.update((slot.spec.name, slot) for slot in old)
            await self._stop_slots(new)
            raise
        await self._stop_slots(old)

    async def _stop_slots(self, slots: list[ProcessSlot]) -> None:
        """Stop slots all at once (each waits out its own grace period) and forget them."""
        async with anyio.create_task_group() as task_group:
            for slot in slots:
                task_group.start_soon(slot.stop)
        for slot in slots:
            if self._slots.get(slot.spec.name) is slot:  # its replacement may hold the name
                del self._slots[slot.spec.name]
