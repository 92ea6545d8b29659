"""What a new dokuend does with the processes an earlier one left running (found through
supervise/record.py): each one that is exactly what the app's current release and
formation ask for is adopted (same pid, same port, its output drained from its FIFO); all
the others (another release, an instance past the formation, a stopped or broken app, a
second copy of one instance) are stopped before anything replaces them."""

import contextlib
from collections.abc import Iterable, Mapping
from contextlib import nullcontext

import anyio

from dokuen.apps.app import App
from dokuen.apps.runtime import Runtime
from dokuen.deploy import releases
from dokuen.errors import explain
from dokuen.events import get_logger
from dokuen.proxy.driver import NGINX_APP
from dokuen.supervise import handed, reaper
from dokuen.supervise.ending import Ending
from dokuen.supervise.formation import expand
from dokuen.supervise.keeper import AdoptedChild, Keeper
from dokuen.supervise.process import STUCK
from dokuen.supervise.record import ProcessRecord
from dokuen.supervise.spawn import OsSpawner

log = get_logger()


def choose(
    records: Iterable[ProcessRecord], release: str | None, wanted: Iterable[str]
) -> tuple[dict[str, ProcessRecord], list[ProcessRecord]]:
    """Split one app's records into those to adopt (one per wanted process name, of the
    current release, the oldest first: it is the one that passed its check) and the rest."""
    names = set(wanted)
    adopt: dict[str, ProcessRecord] = {}
    rest: list[ProcessRecord] = []
    for record in sorted(records, key=lambda r: (r.start, r.pid)):
        ours = release is not None and record.release == release and record.name in names
        if ours and record.name not in adopt:
            adopt[record.name] = record
        else:
            rest.append(record)
    return adopt, rest


def plan(
    app: App, records: list[ProcessRecord]
) -> tuple[dict[str, ProcessRecord], list[ProcessRecord]]:
    """What to adopt of ``app``'s records given its files (nothing when it should not run)."""
    try:
        release = releases.current_release(app.dir)
        if release is None or app.dir.stopped:
            return {}, list(records)
        specs = expand(app.name, release.procfile(), app.dir.read_formation())
    except Exception:  # its files are bad: restore reports it; nothing of it is adopted
        return {}, list(records)
    return choose(records, release.name, (spec.name for spec in specs))


async def take_over(
    app: App, records: list[ProcessRecord], keeper: Keeper, grace: float
) -> list[ProcessRecord]:
    """Hand ``app`` the processes it may adopt (``app.slots.adoptable``) and stop the others.
    Returns the records it was given to adopt whose process was gone."""
    chosen, rest = plan(app, records)
    gone = []
    for name, record in chosen.items():
        child = keeper.adopt(record, app.runtime.cgroups)
        if child is None:
            gone.append(record)
            left = await anyio.to_thread.run_sync(keeper.leftover, record)
            _report_gone(app, record, left)
        else:
            app.slots.adoptable[name] = child
    await stop(rest, keeper, grace)
    return gone


def _report_gone(app: App, record: ProcessRecord, left: bytes) -> None:
    """A process that ended while no dokuend watched it (a re-exec, a crash): the lines it
    left go to the log, then its end (its exit status went to whoever reaped it)."""
    if left:
        app.runtime.mux.write_block(
            app.name, record.name, left if left.endswith(b"\n") else left + b"\n"
        )
    app.runtime.mux.event(app.name, f"{record.name} exited while no dokuend watched it")
    log.info("process.gone", app=app.name, proc=record.name, pid=record.pid, left=len(left))


async def stop(records: list[ProcessRecord], keeper: Keeper, grace: float) -> None:
    """Stop recorded processes that nobody adopts, all at once."""

    async def one(record: ProcessRecord) -> None:
        if await anyio.to_thread.run_sync(keeper.stop, record, grace):
            log.info("process.leftover_stopped", app=record.app, proc=record.name, pid=record.pid)

    async with anyio.create_task_group() as group:
        for record in records:
            group.start_soon(one, record)


async def release_unclaimed(app: App, grace: float) -> None:
    """Stop what ``app`` was offered and did not take (it could not be restored)."""
    left, app.slots.adoptable = list(app.slots.adoptable.values()), {}
    async with anyio.create_task_group() as group:
        for child in left:
            group.start_soon(_stop_child, app, child, grace)


async def _stop_child(app: App, child: AdoptedChild, grace: float) -> None:
    """End it as a slot ends its process (SIGTERM, SIGKILL, what its group left), so that
    one stuck in uninterruptible sleep is reported and left to the kernel, never waited for."""
    name = child.record.name

    def say(message: str, event: str, **fields: object) -> None:
        app.runtime.mux.event(app.name, f"{name} {message}")
        log.info(event, app=app.name, proc=name, pid=child.pid, **fields)

    if await Ending(app.name, name, app.runtime.clock, say).terminate(child, grace) is None:
        say(STUCK, "process.stuck")
    await child.aclose()


async def adopt_all(apps: Mapping[str, App], runtime: Runtime, grace: float) -> None:
    """Offer each app what the last dokuend left of it, stop what no app may adopt (an
    app that is gone, a second copy), remove FIFOs nothing uses and empty every cgroup
    but the adopted processes' (a build a killed dokuend left is killed there)."""
    keeper, cgroups = runtime.keeper, runtime.cgroups
    kept = await _offer(apps, keeper, grace) if keeper is not None else set()
    if cgroups is not None and not await anyio.to_thread.run_sync(cgroups.clear_except, kept):
        log.warning("cgroups.leftovers", group=str(cgroups.root.name))
    for app in apps.values():  # after the build's processes are gone: its half release
        await anyio.to_thread.run_sync(_discard_builds, app, cgroups is None)


def _discard_builds(app: App, kill_uid: bool) -> None:
    """A build a killed dokuend left: with no cgroup to kill it in, whatever runs as the
    app's own build uid (its alone) is it; then the half-made release goes."""
    if kill_uid:
        with contextlib.suppress(OSError, ValueError):
            uid = int(app.dir.build_uid_file.read_text(encoding="ascii"))
            if uid > 0:
                reaper.kill_uid(uid)
    for name in releases.discard_unfinished(app.dir):
        app.runtime.mux.event(app.name, f"discarded {name}, a build that never finished")
        log.warning("build.discarded", app=app.name, release=name)


async def _offer(apps: Mapping[str, App], keeper: Keeper, grace: float) -> set[str]:
    records = await anyio.to_thread.run_sync(keeper.records.load)
    by_app: dict[str, list[ProcessRecord]] = {}
    for record in records:
        if record.app != NGINX_APP:  # the proxy adopts its master itself
            by_app.setdefault(record.app, []).append(record)
    orphans = [r for name, found in by_app.items() if name not in apps for r in found]
    async with anyio.create_task_group() as group:
        group.start_soon(stop, orphans, keeper, grace)
        for name, found in by_app.items():
            if name in apps:
                group.start_soon(take_over, apps[name], found, keeper, grace)
    handed.close_rest()  # the readers the last image handed over that no process uses
    kept = [child for app in apps.values() for child in app.slots.adoptable.values()]
    in_use = {str(child.fifo.path) for child in kept if child.fifo is not None}
    with contextlib.suppress(OSError):
        for fifo in keeper.fifos.iterdir():
            if str(fifo) not in in_use:
                fifo.unlink()
    return {str(child.cgroup.name) for child in kept if child.cgroup is not None}


async def restore_app(app: App, grace: float) -> None:
    """Restore one app; its bad files mark it broken and never keep the others down."""
    try:
        await app.restore()
    except Exception as exc:
        app.failure = explain(exc)  # `apps` and `status` show it broken, with the fix
        app.runtime.mux.event(app.name, f"broken, not restored: {app.failure}")
        log.error("app.broken", app=app.name, problem=app.failure)
        log.debug("app.restore_failed", app=app.name, exc_info=exc)
    await release_unclaimed(app, grace)


async def restore_all(apps: Iterable[App], runtime: Runtime, grace: float) -> None:
    """Restore every app at once (each reaches nginx as soon as it is up), their processes
    spawned in worker threads meanwhile (``OsSpawner.overlapping``)."""
    spawner = runtime.spawner
    with spawner.overlapping() if isinstance(spawner, OsSpawner) else nullcontext():
        async with anyio.create_task_group() as restores:
            for app in apps:
                restores.start_soon(restore_app, app, grace)
