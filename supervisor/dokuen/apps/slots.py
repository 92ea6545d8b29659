"""An app's live process slots and how they are brought to a target (a release, a formation
and a config): the zero-downtime swap of web processes, health-gated starts, and stopping."""

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio
import anyio.abc

from dokuen.apps import resources
from dokuen.apps.options import app_options
from dokuen.apps.runtime import Runtime
from dokuen.deploy import releases
from dokuen.errors import DokuenError
from dokuen.store import AppDir
from dokuen.supervise.environment import process_environment
from dokuen.supervise.formation import ProcessSpec, expand
from dokuen.supervise.keeper import AdoptedChild
from dokuen.supervise.parking import Parking
from dokuen.supervise.ports import PortPool
from dokuen.supervise.process import ProcessSlot, ProcessState, SlotConfig


@dataclass(frozen=True)
class Target:
    """What an app's processes should run: the current (proven) state read from its files,
    or a switch's pending one, which is only in memory until its processes pass."""

    release: releases.Release
    formation: dict[str, int]
    config: dict[str, str]


def _unchanged() -> None:
    pass  # what a slot nginx does not serve tells of its state changes


def failure_text(slot: ProcessSlot, who: str = "", then: str = "") -> str:
    """``web.1 exited with code 3 before it answered. Its last lines: ...``"""
    last = "".join(f"\n    {line}" for line in slot.recent) or " (none)"
    return f"{slot.spec.name}{who} {slot.failure}{then}. Its last lines:{last}"


def check_room(ports: PortPool, formation: Mapping[str, int], holding: int) -> None:
    """Refuse a formation the port range cannot hold (each process takes a port), before
    anything changes; ``holding``: the processes of the app that hold one now."""
    wanted = sum(formation.values())
    free = len(ports.ports) - len(ports.taken) + holding
    if wanted > free:
        raise DokuenError(
            f"cannot run {wanted} processes: DOKUEN_PORT_RANGE {ports.ports.first}-"
            f"{ports.ports.last} has room for {free} (one port each; "
            "widen DOKUEN_PORT_RANGE and restart dokuend, or scale something down)"
        )


class Slots:
    """One app's process slots, all in the app's task group (``task_group``, set by App.run),
    or parked there while idle (``parking``: supervise/parking.py)."""

    def __init__(self, directory: AppDir, runtime: Runtime) -> None:
        self.dir = directory
        self.name = directory.name
        self.runtime = runtime
        self.live: dict[str, ProcessSlot] = {}
        self.stuck: list[ProcessSlot] = []  # stopped, but SIGKILL did not end them
        self.adoptable: dict[str, AdoptedChild] = {}  # what a dead dokuend left (adoption.py)
        self.task_group: anyio.abc.TaskGroup | None = None
        self.parking: Parking | None = None

    async def converge(
        self, target: Target | None, replace: Callable[[ProcessSpec], bool], gate: bool
    ) -> None:
        """Make the running slots match ``target``: stop what is not wanted, runs another
        release, is crashed, or ``replace`` picks; start what is missing.

        Behind nginx, a serving web process that must go is swapped instead: its
        replacement starts beside it on a new port, and only once every replacement passes
        its health check does nginx switch to them and the old ones stop; the other old
        processes (workers) stop only then. If one fails, the new ones stop, the old ones
        keep serving, and DokuenError says why. With ``gate``, a web process started afresh
        (no old one to swap: a first deploy) that fails its check fails the call too, and
        what this call started stops again.
        """
        if target is None:
            return
        release = target.release
        specs = expand(self.name, release.procfile(), target.formation)
        wanted = {spec.name: spec for spec in specs}
        make = self._maker(target)
        doomed = [
            slot
            for name, slot in self.live.items()
            if wanted.get(name) != slot.spec
            or slot.config.release != release.name
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
        if swapped:  # the new web processes first: nothing else changes before they pass
            await self.swap(swapped, [make(wanted[old.spec.name], None) for old in swapped])
        stopped = [slot for slot in doomed if slot not in swapped]
        ports = {slot.spec.name: slot.port for slot in stopped}
        await self.stop(stopped)
        fresh: list[ProcessSlot] = []
        try:
            async with self.runtime.proxy_batch(self.name):  # new web processes: one reload
                webs = [spec for spec in specs if spec.type == "web"]
                for group in (webs, [spec for spec in specs if spec.type != "web"]):
                    for spec in group:
                        if spec.name not in self.live:
                            slot = make(spec, ports.get(spec.name))
                            if (kept := self.adoptable.pop(spec.name, None)) is not None:
                                slot.adopt(kept)
                            self.live[spec.name] = slot
                            try:
                                await self.start(slot)
                            except DokuenError:
                                del self.live[spec.name]
                                raise
                            fresh.append(slot)
                    for slot in fresh:
                        if slot.config.health is not None:
                            await slot.settled.wait()
                    failed = [slot for slot in fresh if slot.failure]
                    if gate and failed:
                        raise DokuenError(failure_text(failed[0]))
        except BaseException:
            if gate:
                with anyio.CancelScope(shield=True):
                    await self.stop(fresh)
            raise

    def _maker(self, target: Target) -> Callable[[ProcessSpec, int | None], ProcessSlot]:
        release, config = target.release, target.config
        settings = self.runtime.settings
        options = app_options(config, settings.stop_timeout)
        cgroups, default = self.runtime.cgroups, settings.app_processes
        for problem in resources.apply_limits(cgroups, self.name, options, default):
            self.runtime.mux.event(self.name, problem)
        defaults = release.defaults(config)
        app_path, home = self.runtime.settings.app_path, self.dir.data
        user = self.runtime.isolation.runs_as(self.dir)

        def environment(spec: ProcessSpec, port: int) -> dict[str, str]:
            return process_environment(spec, port, home, app_path, defaults, config)

        def make(spec: ProcessSpec, port: int | None) -> ProcessSlot:
            web = spec.type == "web"
            health = options.health if web and self.runtime.proxied else None
            cgroup = resources.placement(self.runtime.cgroups, self.name, spec.name)
            return ProcessSlot(
                SlotConfig(
                    spec,
                    release.path,
                    functools.partial(environment, spec),  # not a closure a slot: smaller
                    options.stop_timeout,
                    options.policy,
                    health,
                    user=user,
                    cgroup=cgroup,
                    release=release.name,
                ),
                ports=self.runtime.ports,
                mux=self.runtime.mux,
                spawner=self.runtime.spawner,
                clock=self.runtime.clock,
                port=port,
                on_change=self.runtime.proxy_changed if web else _unchanged,
                keeper=self.runtime.keeper,
                parking=self.parking,
            )

        return make

    async def start(self, slot: ProcessSlot) -> None:
        assert self.task_group is not None
        try:
            await self.task_group.start(slot.run)
        except DokuenError:
            raise
        except Exception as exc:  # no /bin/sh, a bad cwd, an environment Popen refuses
            raise DokuenError(f"cannot start {self.name} {slot.spec.name}: {exc}") from exc

    async def swap(self, old: list[ProcessSlot], new: list[ProcessSlot]) -> None:
        """Zero downtime: start ``new`` beside ``old``, switch nginx once all pass, stop old."""
        started: list[ProcessSlot] = []
        try:
            for slot in new:
                await self.start(slot)
                started.append(slot)
            for slot in new:
                await slot.settled.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.stop(started)
            raise
        failed = [slot for slot in new if slot.failure]
        if failed:
            await self.stop(new)
            raise DokuenError(
                failure_text(failed[0], " of the new processes", "; the old ones keep serving")
            )
        for slot in new:
            self.live[slot.spec.name] = slot
        self.runtime.proxy_changed()
        try:
            await self.runtime.proxy_sync()  # nginx sends new requests to the new processes
        except DokuenError:  # nginx kept the old config (a full disk): so do we
            self.live.update((slot.spec.name, slot) for slot in old)
            await self.stop(new)
            raise
        await self.stop(old)

    async def stop(self, slots: list[ProcessSlot]) -> None:
        """Stop slots all at once (each waits out its own grace period) and forget them."""
        async with anyio.create_task_group() as task_group:
            for slot in slots:
                task_group.start_soon(slot.stop)
        for slot in slots:
            if self.live.get(slot.spec.name) is slot:  # its replacement may hold the name
                del self.live[slot.spec.name]
            if slot.stuck is not None and self.task_group is not None:
                self.stuck.append(slot)  # shown in ps until the kernel ends it
                self.task_group.start_soon(self._reap, slot)

    async def _reap(self, slot: ProcessSlot) -> None:
        await slot.reap()
        self.stuck.remove(slot)
