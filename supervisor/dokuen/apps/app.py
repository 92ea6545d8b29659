"""One app: its processes (one slot each, all in the app's task group) and the operations
that change them: deploy, scale, restart, stop, start, config."""

import codecs
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog

from dokuen.apps.options import app_options
from dokuen.control import cancel_when
from dokuen.deploy import releases
from dokuen.deploy.build import Builder
from dokuen.deploy.slug import make_release
from dokuen.errors import Conflict, DokuenError, NotFound
from dokuen.names import check_config_key, check_domain, not_found
from dokuen.proxy.nginx import DEFAULT_BODY_SIZE, Site, check_body_size
from dokuen.settings import Settings
from dokuen.store import AppDir
from dokuen.supervise.envdir import protect, read_envdir, write_envdir
from dokuen.supervise.environment import process_environment
from dokuen.supervise.formation import ProcessSpec, default_formation, expand, parse_scale
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.ports import PortPool
from dokuen.supervise.process import (
    Clock,
    ProcessSlot,
    ProcessState,
    SlotConfig,
    Spawner,
    describe_exit,
)
from dokuen.supervise.procfile import Procfile, read_procfile

log = structlog.get_logger()

Say = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Runtime:
    """The daemon's shared services that every app uses."""

    settings: Settings
    ports: PortPool
    mux: LogMux
    spawner: Spawner
    clock: Clock
    proxy_changed: Callable[[], None] = lambda: None  # a web process came, went or moved
    proxy_sync: Callable[[], Awaitable[None]] = anyio.lowlevel.checkpoint  # nginx caught up
    proxied: bool = False  # nginx is in front: web processes are health-checked and swapped
    proxy_batch: Callable[[], AbstractAsyncContextManager[None]] = contextlib.nullcontext
    builder: Builder | None = None  # None: a daemon of fakes, which cannot build


def _nothing() -> None:
    pass


class App:
    """Owns one app's slots. Every operation holds the app's lock, so they never interleave."""

    def __init__(self, directory: AppDir, runtime: Runtime) -> None:
        self.dir = directory
        self.name = directory.name
        self.runtime = runtime
        self._slots: dict[str, ProcessSlot] = {}
        self._lock = anyio.Lock()
        self._building = anyio.Lock()  # one build at a time; other operations go on
        self._preparing: set[anyio.CancelScope] = set()  # deploys not yet switching
        self._closed = False
        self._runs = 0  # one-off processes started, to number them run.N
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
                task_status.started()
                await anyio.sleep_forever()

    async def close(self) -> None:
        """Stop every process, then end the app's task; later operations raise NotFound."""
        for deploy in self._preparing:  # builds and release phases under way are called off
            deploy.cancel()
        async with self._building:  # and have cleaned up after themselves
            pass
        async with self._exclusive():
            self._closed = True
            await self._stop_slots(list(self._slots.values()))
        self._scope.cancel()

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """Hold the app's lock; refuse when the app was destroyed while we waited for it."""
        async with self._lock:
            if self._closed:
                raise NotFound(f"app {self.name!r} was destroyed")
            yield

    async def restore(self) -> None:
        """Bring the app back to its formation after the daemon started."""
        await anyio.to_thread.run_sync(protect, self.dir.env)  # made by an older dokuend
        if self.dir.stopped or releases.current_release(self.dir) is None:
            return
        async with self._exclusive():
            await self._converge(replace=lambda _spec: False)

    # -- views -----------------------------------------------------------------------

    def processes(self) -> list[dict[str, Any]]:
        return [slot.info() for slot in self._ordered_slots()]

    def summary(self) -> dict[str, Any]:
        release = releases.current_release(self.dir)
        states = [slot.state for slot in self._slots.values()]
        return {
            "name": self.name,
            "release": release.name if release else None,
            "stopped": self.dir.stopped,
            "formation": self.dir.read_formation(),
            "processes": len(states),
            "running": sum(state is ProcessState.RUNNING for state in states),
            "crashed": sum(state is ProcessState.CRASHED for state in states),
        }

    def config(self) -> dict[str, str]:
        return read_envdir(self.dir.env)

    def hosts(self) -> list[str]:
        """``APP.DOKUEN_DOMAIN`` first, then the app's own domains."""
        # Checked again on the way out: the file may have been edited by hand.
        extra = [check_domain(domain) for domain in self.dir.read_domains()]
        return [f"{self.name}.{self.runtime.settings.domain}", *extra]

    def site(self) -> Site:
        """The app as nginx sees it: its host names and its running web processes."""
        ports = tuple(
            slot.port
            for slot in self._ordered_slots()
            if slot.spec.type == "web" and slot.state is ProcessState.RUNNING and slot.port
        )
        try:
            size = check_body_size(
                self.config().get("DOKUEN_CLIENT_MAX_BODY_SIZE", DEFAULT_BODY_SIZE)
            )
        except DokuenError:  # refused at config:set; a hand-edited env dir gets the default
            size = DEFAULT_BODY_SIZE
        return Site(self.name, tuple(self.hosts()), ports, size)

    async def set_domains(self, domains: list[str]) -> None:
        async with self._exclusive():
            self.dir.write_domains(domains)
            self.runtime.proxy_changed()

    # -- operations ------------------------------------------------------------------

    async def deploy(
        self,
        source: Path,
        say: Say,
        commit: str | None = None,
        hung_up: Callable[[], Awaitable[None]] = anyio.sleep_forever,
    ) -> str:
        """Build a new release from ``source`` and replace the running processes with it.

        The build runs beside the serving release (other operations on the app go on); one
        build at a time per app. A bad Procfile, a failed build or a failed release command
        raise DokuenError, and the running release keeps running. Until the switch begins,
        the deploy is called off when the requester hangs up (``hung_up`` returns: a git push
        that was interrupted must not go live) or the app is destroyed.
        """
        if not source.is_dir():
            raise NotFound(f"no directory {str(source)!r} to deploy (give the app's source dir)")
        if (source / "Procfile").exists():
            read_procfile(source)  # fail fast, before copying or building anything
        if self.runtime.builder is None:
            raise DokuenError("this dokuend cannot build (it runs without real processes)")
        builder = self.runtime.builder
        with anyio.CancelScope() as preparing:
            self._preparing.add(preparing)
            try:
                release = await self._prepare(builder, source, commit, say, hung_up, preparing)
            finally:
                self._preparing.discard(preparing)
        if preparing.cancelled_caught:
            self.runtime.mux.event(self.name, "deploy called off before it went live")
            raise DokuenError(
                f"the deploy of {self.name} was called off before it went live (the app was "
                "destroyed, or the push or command was interrupted); the running release "
                "keeps serving"
            )
        async with self._exclusive():
            await self._switch_to(release, "deploy", say)
            pruned = await anyio.to_thread.run_sync(
                releases.prune, self.dir, self.runtime.settings.keep_releases
            )
            for old in pruned:
                log.info("release.pruned", app=self.name, release=old.name)
            self.runtime.mux.event(self.name, f"deployed {release.name}")
            await say(f"-----> Released {release.name}")
            return release.name

    async def _prepare(
        self,
        builder: Builder,
        source: Path,
        commit: str | None,
        say: Say,
        hung_up: Callable[[], Awaitable[None]],
        scope: anyio.CancelScope,
    ) -> releases.Release:
        """Build the release and run its release phase; a hang-up cancels ``scope``."""
        failure: DokuenError | None = None
        async with anyio.create_task_group() as watchers:
            watchers.start_soon(cancel_when, hung_up, scope)
            try:
                release = await self._build_and_release(builder, source, commit, say)
            except DokuenError as exc:  # raised below: a task group would wrap it in a group
                failure = exc
            watchers.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return release

    async def _build_and_release(
        self, builder: Builder, source: Path, commit: str | None, say: Say
    ) -> releases.Release:
        async with self._building:
            if self._closed:
                raise NotFound(f"app {self.name!r} was destroyed")
            release = await make_release(
                builder,
                self.dir,
                self.runtime.settings,
                self.config(),
                source,
                commit,
                say,
                self.runtime.mux,
            )
        async with self._exclusive():
            procfile = release.procfile()
            if "release" in procfile.types:
                await self._release_phase(release, procfile.command("release"), say)
        return release

    async def rollback(self, target: str | None, say: Say) -> str:
        """Run an earlier release again (the one before the current, or ``vN``): no build,
        the same zero-downtime switch as a deploy."""
        async with self._exclusive():
            current = releases.current_release(self.dir)
            known = releases.list_releases(self.dir)
            if target is None:
                earlier = [r for r in known if current is None or r.version < current.version]
                if not earlier:
                    raise NotFound(f"app {self.name!r} has no release before the current one")
                release = earlier[-1]
            else:
                matches = [r for r in known if r.name == target]
                if not matches:
                    error = not_found("release", target, [r.name for r in known])
                    newest = known[-1].version if known else 0
                    if int(target[1:]) < newest:
                        keep = self.runtime.settings.keep_releases
                        raise NotFound(
                            f"{error}; {target} was pruned: only the last {keep} releases "
                            "are kept (DOKUEN_KEEP_RELEASES)"
                        )
                    raise error
                release = matches[0]
            if release == current:
                raise Conflict(f"{release.name} is already the current release of {self.name}")
            await self._switch_to(release, "rollback", say)
            await say(f"-----> Rolled back to {release.name}")
            return release.name

    async def _release_phase(self, release: releases.Release, command: str, say: Say) -> None:
        """Heroku's release phase: the ``release`` command runs once in the new release,
        before any of its processes start; if it fails, nothing of it ever serves."""
        await say(f"-----> Running release command: {command}")
        spec = ProcessSpec(self.name, "release", 1, command)

        async def indented(text: str) -> None:
            await say("".join(f"       {line}\n" for line in text.splitlines()).rstrip("\n"))

        limit = self.runtime.settings.build_timeout
        status: int | None = None
        try:
            with anyio.move_on_after(limit):
                status = await self._one_off(spec, release, indented, anyio.sleep_forever)
        finally:
            if status != 0:  # failed, too slow, or cancelled: the release never happened
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(releases.discard, release)
                    self.runtime.mux.event(self.name, f"release command of {release.name} failed")
        if status is None:
            raise DokuenError(
                f"the release command of {release.name} took longer than {limit:g} s "
                "(DOKUEN_BUILD_TIMEOUT) and was killed; the running release keeps serving"
            )
        if status != 0:
            raise DokuenError(
                f"the release command of {release.name} exited with code {status}; "
                "nothing was changed, the running release keeps serving"
            )

    async def _switch_to(self, release: releases.Release, verb: str, say: Say) -> None:
        """Make ``release`` current and run it. If its processes cannot start (or fail their
        health checks), the previous release stays current and keeps serving."""
        procfile = release.procfile()
        formation = default_formation(procfile, self.dir.read_formation())
        shown = ", ".join(f"{t}={n}" for t, n in formation.items()) or "none"
        previous, previous_formation = releases.current_release(self.dir), self.dir.read_formation()
        self.dir.write_formation(formation)
        releases.switch_current(self.dir, release)
        self.dir.set_stopped(False)
        self.runtime.mux.event(self.name, f"{verb}: starting {release.name} ({shown})")
        await say(f"-----> Starting {release.name} with formation {shown}")
        try:
            await self._converge(replace=lambda _spec: True)
        except DokuenError as exc:
            if previous is not None:  # the old release is what serves: point back at it
                releases.switch_current(self.dir, previous)
                self.dir.write_formation(previous_formation)
                with contextlib.suppress(DokuenError):  # and run whatever of it stopped
                    await self._converge(replace=lambda _spec: False)
            self.runtime.mux.event(self.name, f"{verb} of {release.name} failed: {exc}")
            raise DokuenError(f"{verb} of {release.name} failed: {exc}") from None

    async def run_once(self, command: str, say: Say, hung_up: Callable[[], Awaitable[None]]) -> int:
        """A one-off process (``run.N``) in the current release and environment: its output
        goes to ``say``, its exit status is returned (128+N for signal N, as a shell does).
        If the requester hangs up, the process and its group are killed."""
        release = releases.current_release(self.dir)
        if release is None:
            raise NotFound(f"app {self.name!r} has no release yet (deploy it first)")
        self._runs += 1
        spec = ProcessSpec(self.name, "run", self._runs, command)
        return await self._one_off(spec, release, say, hung_up)

    async def _one_off(
        self,
        spec: ProcessSpec,
        release: releases.Release,
        say: Say,
        hung_up: Callable[[], Awaitable[None]],
    ) -> int:
        """Run one process of ``spec`` to its end in ``release`` with the app's environment."""
        port = self.runtime.ports.allocate()
        app_path = self.runtime.settings.app_path
        env = process_environment(
            spec, port, release.path, app_path, release.defaults(), self.config()
        )
        mux = self.runtime.mux
        try:
            child = await self.runtime.spawner(spec.command, env, release.path)
            mux.event(self.name, f"{spec.name} started for one command, pid {child.pid}")
            status = -signal.SIGKILL
            try:
                async with anyio.create_task_group() as tg:

                    async def watch() -> None:
                        await hung_up()
                        child.signal_group(signal.SIGKILL)

                    tg.start_soon(watch)
                    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
                    while chunk := await child.read(1 << 16):
                        await say(decoder.decode(chunk))
                    status = await child.wait()
                    tg.cancel_scope.cancel()
            finally:  # cancelled (a deadline, the daemon stopping): the command goes too
                with anyio.CancelScope(shield=True):
                    child.signal_group(signal.SIGKILL)
                    await child.wait()
                    await child.aclose()
        finally:
            self.runtime.ports.release(port)
        mux.event(self.name, f"{spec.name} {describe_exit(status)}")
        return status if status >= 0 else 128 - status

    def release_list(self) -> list[dict[str, Any]]:
        """Every kept release, newest first: when and from what it was made, which is current."""
        current = releases.current_release(self.dir)
        rows = []
        for release in reversed(releases.list_releases(self.dir)):
            record = release.record()
            rows.append(
                {
                    "version": release.name,
                    "created": record.get("created"),
                    "commit": record.get("commit"),
                    "buildpacks": record.get("buildpacks", []),
                    "process_types": sorted(record.get("process_types") or {}),
                    "current": release == current,
                }
            )
        return rows

    def build_log(self, target: str | None) -> str:
        """The build output of release ``vN`` (default: the current one)."""
        known = releases.list_releases(self.dir)
        if target is None:
            release = releases.current_release(self.dir)
            if release is None:
                raise NotFound(f"app {self.name!r} has no release yet")
        else:
            matches = [r for r in known if r.name == target]
            if not matches:
                raise not_found("release", target, [r.name for r in known])
            release = matches[0]
        try:
            return release.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise NotFound(f"{release.name} of {self.name} has no build log") from None

    async def scale(self, args: Iterable[str]) -> dict[str, int]:
        """Apply ``TYPE=N`` changes to the formation; return the whole new formation."""
        async with self._exclusive():
            procfile = self._procfile()
            changes = parse_scale(args, procfile)
            formation = {**self.dir.read_formation(), **changes}
            self.dir.write_formation(formation)
            shown = ", ".join(f"{t}={n}" for t, n in changes.items())
            self.runtime.mux.event(self.name, f"scaled {shown}")
            if not self.dir.stopped:
                await self._converge(replace=lambda _spec: False)
            return formation

    async def restart(self, target: str | None) -> list[str]:
        """Restart every process, a type's (``web``) or one (``web.2``); return their names."""
        async with self._exclusive():
            self._procfile()
            chosen = self._select(target)
            names = {slot.spec.name for slot in chosen}
            self.runtime.mux.event(self.name, f"restarting {target or 'all processes'}")
            self.dir.set_stopped(False)
            await self._converge(replace=lambda spec: spec.name in names)
            return sorted(names)

    async def stop(self) -> None:
        async with self._exclusive():
            self.dir.set_stopped(True)
            self.runtime.mux.event(self.name, "stopping all processes")
            await self._stop_slots(list(self._slots.values()))

    async def start(self) -> None:
        async with self._exclusive():
            self._procfile()
            self.dir.set_stopped(False)
            await self._converge(replace=lambda _spec: False)

    async def set_config(self, changes: Mapping[str, str], removals: Iterable[str]) -> None:
        """Change the config and restart the processes so they see it."""
        for key in [*changes, *removals]:
            check_config_key(key)
        merged = {**self.config(), **changes}
        for key in removals:
            merged.pop(key, None)
        app_options(merged, self.runtime.settings.stop_timeout)  # refuse bad options early
        async with self._exclusive():
            before = self.config()
            await anyio.to_thread.run_sync(write_envdir, self.dir.env, changes, list(removals))
            keys = ", ".join([*changes, *(f"-{key}" for key in removals)])
            self.runtime.mux.event(self.name, f"config changed ({keys})")
            if self.dir.stopped or releases.current_release(self.dir) is None:
                return
            try:
                await self._converge(replace=lambda _spec: True)
            except DokuenError:
                # The old processes, with the old config, are what serves: keep it so.
                restore = {key: before[key] for key in [*changes, *removals] if key in before}
                gone = [key for key in [*changes, *removals] if key not in before]
                await anyio.to_thread.run_sync(write_envdir, self.dir.env, restore, gone)
                self.runtime.mux.event(self.name, f"config change ({keys}) undone")
                raise

    # -- the machinery ---------------------------------------------------------------

    def _procfile(self) -> Procfile:
        release = releases.current_release(self.dir)
        if release is None:
            hint = f"deploy it: dokuenctl deploy {self.name} DIR"
            raise NotFound(f"app {self.name!r} has no release yet ({hint})")
        return release.procfile()

    def _ordered_slots(self) -> list[ProcessSlot]:
        return sorted(self._slots.values(), key=lambda slot: (slot.spec.type, slot.spec.index))

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

    async def _converge(self, replace: Callable[[ProcessSpec], bool]) -> None:
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
        defaults = release.defaults()
        app_path = self.runtime.settings.app_path

        def make(spec: ProcessSpec, port: int | None) -> ProcessSlot:
            def environment(port: int) -> dict[str, str]:
                return process_environment(spec, port, release.path, app_path, defaults, config)

            web = spec.type == "web"
            health = options.health if web and self.runtime.proxied else None
            return ProcessSlot(
                SlotConfig(
                    spec, release.path, environment, options.stop_timeout, options.policy, health
                ),
                ports=self.runtime.ports,
                mux=self.runtime.mux,
                spawner=self.runtime.spawner,
                clock=self.runtime.clock,
                port=port,
                on_change=self.runtime.proxy_changed if web else _nothing,
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
        await self.runtime.proxy_sync()  # nginx sends new requests to the new processes
        await self._stop_slots(old)

    async def _stop_slots(self, slots: list[ProcessSlot]) -> None:
        """Stop slots all at once (each waits out its own grace period) and forget them."""
        async with anyio.create_task_group() as task_group:
            for slot in slots:
                task_group.start_soon(slot.stop)
        for slot in slots:
            if self._slots.get(slot.spec.name) is slot:  # its replacement may hold the name
                del self._slots[slot.spec.name]
