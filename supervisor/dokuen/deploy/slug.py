"""Making a release from source: copy it into the next release's directory, build it there
with the buildpacks, record what came out. The slug is Heroku's word for the built app."""

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import anyio

from dokuen.deploy import releases
from dokuen.deploy.build import Builder, Job, Limits
from dokuen.deploy.tools import find_uv, reachable_buildpacks, reachable_uv
from dokuen.errors import DokuenError
from dokuen.isolate.isolation import Isolation
from dokuen.resources import shipped
from dokuen.settings import Settings
from dokuen.store import AppDir, Store, write_atomic
from dokuen.supervise.environment import read_dotenv
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.procfile import Procfile, read_procfile

Say = Callable[[str], Awaitable[None]]


class Transcript:
    """A build's output: passed on a whole line at a time (a build writes in pieces that may
    cut a line), and kept for the build log up to ``LOG_LIMIT``. A line longer than
    ``LINE_LIMIT`` is passed on in pieces, so no output costs more than its own size."""

    LINE_LIMIT = 64 << 10
    LOG_LIMIT = 8 << 20

    def __init__(self, say: Say) -> None:
        self._say = say
        self._pieces: list[str] = []
        self._kept = 0
        self._partial = ""  # the start of a line still to come

    async def write(self, text: str) -> None:
        self.keep(text)
        *lines, self._partial = (self._partial + text).split("\n")
        while len(self._partial) > self.LINE_LIMIT:
            lines.append(self._partial[: self.LINE_LIMIT])
            self._partial = self._partial[self.LINE_LIMIT :]
        for line in lines:
            await self._say(line)

    def keep(self, text: str) -> None:
        """For the build log only."""
        if self._kept < self.LOG_LIMIT:
            self._pieces.append(text[: self.LOG_LIMIT - self._kept])
            self._kept += len(self._pieces[-1])
            if self._kept >= self.LOG_LIMIT:
                self._pieces.append("\n[the build log stops here: it is cut at 8 MiB]\n")

    async def end_line(self) -> None:
        if self._partial:
            await self.write("\n")

    @property
    def text(self) -> str:
        return "".join(self._pieces)


def process_types(build_dir: Path, defaults: Mapping[str, str]) -> Procfile:
    """The release's process types: the Procfile's, then the buildpacks' defaults for types
    the Procfile lacks (Heroku's rule). Raises DokuenError when there is none at all, or
    the Procfile is a link or not a regular file (read as isolate/paths.py does)."""
    present = os.path.lexists(build_dir / "Procfile")  # a link is there, and is refused
    own = read_procfile(build_dir).commands if present else ()
    types = dict(own)
    for name, command in defaults.items():
        types.setdefault(name, command)
    if not types:
        raise DokuenError(
            "the app declares no process types: add a Procfile with a line like 'web: ./server'"
        )
    return Procfile(tuple(types.items()))


def _keep_log(directory: AppDir, release: releases.Release, text: str) -> None:
    """The last build's output, kept beside the app's state and (when it made a release)
    with the release."""
    if not directory.root.is_dir():  # the app was destroyed meanwhile: nothing to keep
        return
    write_atomic(directory.root / "last-build.log", text, mode=0o600)
    if release.record_file.exists():
        write_atomic(release.log_file, text, mode=0o600)


def _build_uid(settings: Settings, isolation: Isolation, directory: AppDir) -> int:
    """The app's build uid: from ``DOKUEN_BUILD_UIDS`` when it is a range, else from the
    home's uid block."""
    if isinstance(settings.build_uids, tuple):
        return Store(settings.home).build_uid(directory.name, *settings.build_uids)
    found = isolation.give_identity(settings.home, directory)
    if found is None:
        raise DokuenError("this home has no uid block for builds (restart dokuend as root)")
    return found.build_uid


async def make_release(
    builder: Builder,
    directory: AppDir,
    settings: Settings,
    config: Mapping[str, str],
    source: Path,
    commit: str | None,
    say: Say,
    mux: LogMux,
    isolation: Isolation,
) -> releases.Release:
    """Build ``source`` into the app's next release and record it; every line of the build
    goes to ``say`` and to the build log. A build that fails for any reason leaves no
    release behind and raises. The build runs as the app's build uid (``isolation``) and
    the release it made becomes the app's."""
    app = directory.name
    release = await anyio.to_thread.run_sync(releases.start_release, directory, source)
    mux.event(app, f"build of {release.name} started")
    transcript = Transcript(say)
    began = time.monotonic()
    try:
        await transcript.write(f"-----> Building {app} {release.name} from {commit or source}\n")
        uid, bundled = None, shipped("buildpacks")
        uv = find_uv(settings.uv, settings.app_path)
        if settings.isolated_builds:
            uid = await anyio.to_thread.run_sync(_build_uid, settings, isolation, directory)
            bundled = await anyio.to_thread.run_sync(reachable_buildpacks, settings.home)
            if uv is not None:
                uv = await anyio.to_thread.run_sync(reachable_uv, uv, settings.home)
        limits = Limits(
            settings.build_timeout, settings.build_memory_mib, settings.build_processes, uid
        )
        job = Job(
            app,
            release.path,
            directory.cache,
            directory.workspace,
            config,
            commit,
            settings.app_path,
            limits,
            bundled,
            uv,
        )
        outcome = await builder.build(job, transcript.write)
        await transcript.end_line()
        procfile = process_types(release.path, outcome.release.process_types)
        read_dotenv(release.path)  # a .env that is a link or no file fails the build, here
        await transcript.write(f"-----> Process types -> {', '.join(procfile.types)}\n")
        await anyio.to_thread.run_sync(isolation.own_release, directory, release.path)
        record = {
            "version": release.version,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "description": releases.deploy_description(commit),
            "slug": release.name,
            "source": str(source),
            "commit": commit,
            "buildpacks": list(outcome.buildpacks),
            "process_types": dict(procfile.commands),
            "buildpack_config": dict(outcome.release.config_vars),
            "config": dict(config),
            "build_seconds": round(time.monotonic() - began, 2),
        }
        await anyio.to_thread.run_sync(releases.finish_release, release, record)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await transcript.end_line()
            transcript.keep(f" !     {exc}\n")  # the requester gets it as the error
            await anyio.to_thread.run_sync(releases.discard, release)
            mux.event(app, f"build of {release.name} failed: {exc}")
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_keep_log, directory, release, transcript.text)
    mux.event(app, f"build of {release.name} succeeded")
    return release
