"""The switch a deploy, a config change and a rollback share: the new release is pending
(in memory, and ``pending.json`` on disk) while its processes start and are checked, and
becomes current only once they passed. If they fail, or its state cannot be written, the
release is marked failed and the previous release, formation and config keep serving."""

import contextlib
from collections.abc import Awaitable, Callable, Mapping

import anyio

from dokuen.apps import pending
from dokuen.apps.app import App
from dokuen.apps.slots import Target
from dokuen.deploy import releases
from dokuen.errors import DokuenError, explain
from dokuen.supervise.formation import default_formation

Say = Callable[[str], Awaitable[None]]


async def switch_to(
    app: App,
    release: releases.Release,
    verb: str,
    say: Say,
    config: Mapping[str, str] | None = None,
) -> None:
    """Run ``release`` (with ``config`` as the app's, when given) and make it current once
    its processes pass; hold the app's lock around the call. If they cannot start or fail
    their health checks, the previous release and config stay current and keep serving,
    the release is marked failed, and DokuenError says why (with the failed process's last
    lines). A dokuend killed meanwhile comes back on the previous state (``pending.undo``)."""
    wanted = dict(config) if config is not None else app.config()
    formation = default_formation(release.procfile(), app.dir.read_formation())
    shown = ", ".join(f"{t}={n}" for t, n in formation.items()) or "none"
    target = Target(release, formation, wanted)
    try:
        try:
            await anyio.to_thread.run_sync(pending.begin, app.dir, release)
            app.pending = target
            app.runtime.mux.event(app.name, f"{verb}: starting {release.name} ({shown}), pending")
            await say(f"-----> Starting {release.name} with formation {shown}")
            await app.converge(replace=lambda _spec: True, gate=True)
            await anyio.to_thread.run_sync(pending.commit, app.dir, target)
        finally:
            app.pending = None
    except (DokuenError, OSError) as exc:
        reason = explain(exc)
        with anyio.CancelScope(shield=True):
            await _back(app, release, f"{verb} failed: {_short(reason)}")
        app.runtime.mux.event(app.name, f"{verb} of {release.name} failed: {reason}")
        raise DokuenError(f"{verb} of {release.name} failed: {reason}") from None
    app.failure = None
    app.runtime.mux.event(app.name, f"{release.name} passed its checks: now current")


async def _back(app: App, release: releases.Release, reason: str) -> None:
    """After a failed switch: the previous state on disk again, ``release`` marked failed,
    and the previous processes running (what of ``release`` started, stopped)."""
    try:
        await anyio.to_thread.run_sync(pending.undo, app.dir, reason)
        if releases.current_release(app.dir) != release:  # no record was made: mark it here
            await anyio.to_thread.run_sync(releases.mark_failed, release, reason)
    except (DokuenError, OSError) as exc:  # the record stays: the next start undoes it
        app.runtime.mux.event(app.name, f"cannot put back the previous state yet: {explain(exc)}")
    with contextlib.suppress(DokuenError, OSError):
        await app.converge(replace=lambda _spec: False)


def _short(reason: str) -> str:
    """The failure as a release records it: its first line, without the last lines."""
    first = reason.splitlines()[0].removesuffix(" Its last lines:").removesuffix(" (none)")
    return first.replace("; the old ones keep serving.", "").rstrip(".")
