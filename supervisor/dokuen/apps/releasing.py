"""How an app's releases change: a deploy (build, release phase, switch), a config change
and a rollback (each a new release running an earlier slug, as on Heroku), the switch they
share, and one-off processes (``dokuenctl run`` and the release phase) in a release's
environment."""

import codecs
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

import anyio

from dokuen.apps import resources
from dokuen.apps.app import App
from dokuen.apps.attach import Attached
from dokuen.apps.options import app_options
from dokuen.apps.pending import write_config
from dokuen.apps.switch import switch_to
from dokuen.control import cancel_when
from dokuen.deploy import releases
from dokuen.deploy.build import Builder
from dokuen.deploy.slug import make_release
from dokuen.errors import Conflict, DokuenError, NotFound
from dokuen.events import get_logger
from dokuen.names import (
    LIMIT_VARS,
    check_config_key,
    check_settable_config_key,
    not_found,
)
from dokuen.supervise.environment import process_environment
from dokuen.supervise.formation import ProcessSpec
from dokuen.supervise.process import describe_exit
from dokuen.supervise.procfile import read_procfile

log = get_logger()

Say = Callable[[str], Awaitable[None]]


async def deploy(
    app: App,
    source: Path,
    say: Say,
    commit: str | None = None,
    hung_up: Callable[[], Awaitable[None]] = anyio.sleep_forever,
) -> str:
    """Build a new release of ``app`` from ``source`` and replace the running processes
    with it; return the release's name.

    The build runs beside the serving release (other operations on the app go on); one
    build at a time per app. A bad Procfile, a failed build or a failed release command
    raise DokuenError, and the running release keeps running. Until the switch begins,
    the deploy is called off when the requester hangs up (``hung_up`` returns: a git push
    that was interrupted must not go live) or the app is destroyed.
    """
    if not source.is_dir():
        raise NotFound(f"no directory {str(source)!r} to deploy (give the app's source dir)")
    if os.path.lexists(source / "Procfile"):  # a link is there, and read_procfile refuses it
        read_procfile(source)  # fail fast, before copying or building anything
    if app.runtime.builder is None:
        raise DokuenError("this dokuend cannot build (it runs without real processes)")
    builder = app.runtime.builder
    with app.preparing() as preparing:
        release = await _prepare(app, builder, source, commit, say, hung_up, preparing)
    if preparing.cancelled_caught:
        app.runtime.mux.event(app.name, "deploy called off before it went live")
        raise DokuenError(
            f"the deploy of {app.name} was called off before it went live (the app was "
            "destroyed, or the push or command was interrupted); the running release "
            "keeps serving"
        )
    async with app.exclusive():
        await anyio.to_thread.run_sync(releases.restamp_config, release, app.config())
        await switch_to(app, release, "deploy", say)
        await _prune(app)
        app.runtime.mux.event(app.name, f"deployed {release.name}")
        await say(f"-----> Released {release.name}")
        return release.name


async def _prepare(
    app: App,
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
            release = await _build_and_release(app, builder, source, commit, say)
        except DokuenError as exc:  # raised below: a task group would wrap it in a group
            failure = exc
        watchers.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return release


async def _build_and_release(
    app: App, builder: Builder, source: Path, commit: str | None, say: Say
) -> releases.Release:
    async with app.building():
        release = await make_release(
            builder,
            app.dir,
            app.runtime.settings,
            app.config(),
            source,
            commit,
            say,
            app.runtime.mux,
            app.runtime.isolation,
        )
    async with app.exclusive():
        procfile = release.procfile()
        if "release" in procfile.types:
            await _release_phase(app, release, procfile.command("release"), say)
    return release


async def rollback(app: App, target: str | None, say: Say, force: bool = False) -> dict[str, str]:
    """Heroku's rollback: a new release that runs an earlier one's slug (the one before the
    current, or ``vN``) with that release's config, which replaces the app's (but for its
    limits, which stay as they are: ``with_limits_of``); no build, the
    same zero-downtime switch as a deploy; never to a release that failed to boot unless
    ``force``. Return the new release's and the target's names."""
    async with app.exclusive():
        current = releases.current_release(app.dir)
        known = releases.list_releases(app.dir)
        if target is None:  # the newest proven release before the current one
            earlier = [r for r in known if current is None or r.version < current.version]
            proven = [r for r in earlier if not releases.failure(r)]
            if not proven:
                failed = " that did not fail to boot" if earlier else ""
                raise NotFound(f"app {app.name!r} has no release before the current one{failed}")
            chosen = proven[-1]
        else:
            matches = [r for r in known if r.name == target]
            if not matches:
                error = not_found("release", target, [r.name for r in known])
                newest = known[-1].version if known else 0
                if int(target[1:]) < newest:
                    keep = app.runtime.settings.keep_releases
                    raise NotFound(
                        f"{error}; {target} was pruned: only the last {keep} releases "
                        "are kept (DOKUEN_KEEP_RELEASES)"
                    )
                raise error
            chosen = matches[0]
        if chosen == current:
            raise Conflict(f"{chosen.name} is already the current release of {app.name}")
        if (reason := releases.failure(chosen)) and not force:
            raise Conflict(
                f"{chosen.name} of {app.name} failed to boot ({reason}); roll back to another "
                f"release, or try it anyway: dokuenctl rollback {app.name} {chosen.name} --force"
            )
        snapshot = chosen.record().get("config")
        config = dict(snapshot) if isinstance(snapshot, dict) else app.config()
        config = with_limits_of(app.config(), config)
        release = await anyio.to_thread.run_sync(
            releases.derived_release, app.dir, chosen, config, f"Rollback to {chosen.name}"
        )
        await _switch_derived(app, release, "rollback", say, config)
        await say(f"-----> Rolled back to {chosen.name} as {release.name}")
        return {"release": release.name, "target": chosen.name}


def with_limits_of(now: Mapping[str, str], config: Mapping[str, str]) -> dict[str, str]:
    """``config`` with the app's limits (``LIMIT_VARS``) as they are ``now``: a rollback
    brings back an earlier release's config, never the limits an admin has changed since
    (a key scoped to the app could otherwise undo them by rolling back)."""
    kept = {key: value for key, value in config.items() if key not in LIMIT_VARS}
    return kept | {key: now[key] for key in LIMIT_VARS if key in now}


async def change_config(
    app: App, changes: Mapping[str, str], removals: Iterable[str]
) -> tuple[str | None, bool]:
    """Heroku's config change: a new release that runs the current slug with the changed
    config, switched to as a deploy is (if its processes fail, the old release and config
    stay). Before the first deploy (or while the app is stopped) nothing restarts: the
    config changes (and the release is made) for the next start or deploy. Return the new
    release's name (None before the first deploy) and whether processes restarted."""
    removals = list(removals)
    for key in changes:
        check_settable_config_key(key)
    for key in removals:
        check_config_key(key)
    async with app.exclusive():
        merged = {**app.config(), **changes}
        for key in removals:
            merged.pop(key, None)
        app_options(merged, app.runtime.settings.stop_timeout)  # refuse bad options early
        keys = ", ".join([*changes, *(f"-{key}" for key in removals)])
        app.runtime.mux.event(app.name, f"config changed ({keys})")
        current = releases.current_release(app.dir)
        if current is None:
            await anyio.to_thread.run_sync(write_config, app.dir, merged)
            return None, False
        description = releases.config_description(changes, removals)
        release = await anyio.to_thread.run_sync(
            releases.derived_release, app.dir, current, merged, description
        )
        if app.dir.stopped:
            await anyio.to_thread.run_sync(write_config, app.dir, merged)
            releases.switch_current(app.dir, release)
            await _prune(app)
            return release.name, False
        await _switch_derived(app, release, "config change", _quiet, merged)
        return release.name, True


async def _quiet(_text: str) -> None:
    pass


async def _switch_derived(
    app: App, release: releases.Release, verb: str, say: Say, config: Mapping[str, str]
) -> None:
    """Switch to a release made by ``derived_release`` with its ``config``; prune after."""
    await switch_to(app, release, verb, say, config)
    await _prune(app)


async def _prune(app: App) -> None:
    pruned = await anyio.to_thread.run_sync(
        releases.prune, app.dir, app.runtime.settings.keep_releases
    )
    for old in pruned:
        log.info("release.pruned", app=app.name, release=old.name)


async def _release_phase(app: App, release: releases.Release, command: str, say: Say) -> None:
    """Heroku's release phase: the ``release`` command runs once in the new release,
    before any of its processes start; if it fails, nothing of it ever serves."""
    await say(f"-----> Running release command: {command}")
    spec = ProcessSpec(app.name, "release", 1, command)

    async def indented(text: str) -> None:
        await say("".join(f"       {line}\n" for line in text.splitlines()).rstrip("\n"))

    limit = app.runtime.settings.build_timeout
    status: int | None = None
    try:
        with anyio.move_on_after(limit):
            status = await _one_off(app, spec, release, indented, anyio.sleep_forever)
    finally:
        if status != 0:  # failed, too slow, or cancelled: the release never happened
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(releases.discard, release)
                app.runtime.mux.event(app.name, f"release command of {release.name} failed")
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


async def run_once(
    app: App,
    command: str,
    say: Say,
    hung_up: Callable[[], Awaitable[None]],
    attach: Attached | None = None,
) -> int:
    """A one-off process (``run.N``) in the current release and environment (a Procfile
    type's command when ``command`` starts with the type, ``Procfile.one_off``): its output
    goes to ``say`` (or its streams to ``attach``), its exit status is returned (128+N for
    signal N, as a shell does). If the requester hangs up, the process and its group are
    killed."""
    release = releases.current_release(app.dir)
    if release is None:
        raise NotFound(f"app {app.name!r} has no release yet (deploy it first)")
    with contextlib.suppress(DokuenError):  # a release without process types runs it as is
        command = release.procfile().one_off(command)
    app.runs += 1
    spec = ProcessSpec(app.name, "run", app.runs, command)
    return await _one_off(app, spec, release, say, hung_up, attach)


async def _one_off(
    app: App,
    spec: ProcessSpec,
    release: releases.Release,
    say: Say,
    hung_up: Callable[[], Awaitable[None]],
    attach: Attached | None = None,
) -> int:
    """Run one process of ``spec`` to its end in ``release`` with the app's environment."""
    port = app.runtime.ports.allocate()
    app_path = app.runtime.settings.app_path
    config = app.config()
    env = process_environment(spec, port, app.dir.data, app_path, release.defaults(config), config)
    mux = app.runtime.mux
    user = app.runtime.isolation.runs_as(app.dir)
    cgroups = app.runtime.cgroups
    try:
        if cgroups is not None:  # under the app's limits (its processes say what is amiss)
            options = app_options(app.config(), 0)
            resources.apply_limits(cgroups, app.name, options, app.runtime.settings.app_processes)
        cgroup = cgroups.process(app.name, spec.name) if cgroups is not None else None
        spawner = app.runtime.spawner if attach is None else attach.spawner(app.runtime.spawner)
        child = await spawner(spec.command, env, release.path, user=user, cgroup=cgroup)
        mux.event(app.name, f"{spec.name} started for one command, pid {child.pid}")
        status = -signal.SIGKILL
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    await hung_up()
                    child.signal_group(signal.SIGKILL)

                tg.start_soon(watch)
                if attach is not None:
                    status = await attach.relay(child, spec)
                else:
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
        app.runtime.ports.release(port)
        if attach is not None:
            attach.close()
    mux.event(app.name, f"{spec.name} {describe_exit(status)}")
    return status if status >= 0 else 128 - status
