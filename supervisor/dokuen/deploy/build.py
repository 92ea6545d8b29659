"""Running a build: the buildpacks' ``bin/detect``, ``bin/compile`` and ``bin/release`` against
the build directory, each an isolated subprocess.

Isolation: every step runs in its own session with the environment of
``buildpack.build_environment`` and nothing else, under a memory limit (RLIMIT_DATA, per
process) and a process limit (RLIMIT_NPROC), as the build user when dokuend runs as root.
With cgroups, the build has a group of its own (the same limits, for the whole build) and
each step a group below it, killed whole when the step ends. One deadline covers the whole
build; when it passes, the running step and every process it started are killed. At the
end, every process of the build's uid is killed, again and again until none is left.
"""

import codecs
import contextlib
import os
import shlex
import shutil
import signal
import stat
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import psutil

from dokuen.deploy.buildpack import (
    BUNDLED,
    BUNDLED_AS_DATA,
    BuildError,
    ReleaseInfo,
    Source,
    build_environment,
    detect_bundled,
    merge_release,
    parse_buildpacks_file,
    parse_release,
    parse_source,
)
from dokuen.isolate.cgroups import Group
from dokuen.isolate.modes import permits
from dokuen.isolate.paths import chown_tree, read_optional
from dokuen.supervise import reaper
from dokuen.supervise.envdir import write_envdir
from dokuen.supervise.spawn import OsSpawner

Say = Callable[[str], Awaitable[None]]
# Limits are set by bash's ulimit (present on Linux and macOS), then the step is exec'ed.
# The values are passed as arguments, never written into the script.
_LIMITED = 'ulimit -d "$1" && ulimit -u "$2" && shift 2 && exec "$@"'
# A later buildpack's compile sees what earlier ones exported (the buildpack API's `export`).
_WITH_EXPORTS = 'while [ "$1" != -- ]; do . "$1" || exit 1; shift; done; shift; exec "$@"'
_OUTPUT_LIMIT = 1 << 20  # of detect and release output kept for parsing
_BUILDPACKS_LIMIT = 64 << 10  # bytes a .buildpacks file may hold


@dataclass(frozen=True)
class Limits:
    timeout: float  # seconds for the whole build
    memory_mib: int  # per process
    processes: int
    user: int | None = None  # run the build as this uid (and gid), the app's own (when root)


@dataclass(frozen=True)
class Job:
    """One build: the source already copied into ``build_dir`` (where the app will run)."""

    app: str
    build_dir: Path
    cache_dir: Path  # kept between builds of the app
    workspace: Path  # emptied for each build: ENV_DIR, the build's HOME, fetched buildpacks
    config: Mapping[str, str]
    commit: str | None
    path: str  # the build's PATH
    limits: Limits
    bundled: Path  # the bundled buildpacks (a copy builds of their own uid can reach)
    uv: str | None = None  # the uv program builds may use (DOKUEN_UV in their environment)


@dataclass(frozen=True)
class Outcome:
    buildpacks: tuple[str, ...]  # as their bin/detect named them ("Python")
    release: ReleaseInfo


@dataclass(frozen=True)
class _Pack:
    source: Source
    path: Path
    detected: str = ""  # the name a bundled buildpack's detect gave, decided without it


class Builder:
    def __init__(self, spawner: OsSpawner) -> None:
        self.spawner = spawner
        self._groups: dict[Path, Group] = {}  # the cgroup of each running build, by workspace
        self._steps = 0

    async def build(self, job: Job, say: Say) -> Outcome:
        """Build ``job.build_dir`` in place; return what the buildpacks said.

        Raises BuildError when no buildpack applies, one fails, or the time runs out.
        """
        chosen = _bundled_choice(job)
        if chosen is not None and chosen.source.text in BUNDLED_AS_DATA:
            # Its compile and release only say fixed things: no process, so no workspace,
            # no cgroup, no build uid to hand the tree to and nothing left to kill.
            said, info = BUNDLED_AS_DATA[chosen.source.text]
            await say(f"-----> {chosen.detected} app detected\n")
            await say(said)
            return Outcome((chosen.detected,), info)
        await anyio.to_thread.run_sync(_prepare, job)
        group = await self._make_group(job, say)
        try:
            with anyio.move_on_after(job.limits.timeout) as scope:
                outcome = await self._run_buildpacks(job, say)
        finally:
            with anyio.CancelScope(shield=True):
                if group is not None:  # whatever any step left, wherever it went
                    self._groups.pop(job.workspace, None)
                    await anyio.to_thread.run_sync(group.destroy)
                if job.limits.user is not None:  # the uid is the app's builds' alone
                    await anyio.to_thread.run_sync(reaper.kill_uid, job.limits.user)
        if scope.cancelled_caught:
            raise BuildError(
                f"the build took longer than {job.limits.timeout:g} s (DOKUEN_BUILD_TIMEOUT) "
                "and was killed with every process it started"
            )
        await anyio.to_thread.run_sync(_finish, job)
        return outcome

    async def _make_group(self, job: Job, say: Say) -> Group | None:
        """The build's cgroup, under the build's limits for all its processes together."""
        cgroups = self.spawner.cgroups
        if cgroups is None:
            return None
        group = cgroups.build(job.app)
        try:
            group.create()
        except OSError as exc:
            raise BuildError(f"cannot make the build's cgroup {group.name}: {exc}") from None
        for problem in group.set_limits(job.limits.memory_mib << 20, job.limits.processes):
            await say(f"-----> warning: {problem}\n")
        self._groups[job.workspace] = group
        return group

    # -- the steps -------------------------------------------------------------------

    async def _run_buildpacks(self, job: Job, say: Say) -> Outcome:
        packs = await self._choose(job, say)
        names = []
        exports: list[Path] = []
        env_dir, cache = job.workspace / "env", job.cache_dir
        for pack in packs:
            names.append(pack.detected or await self._detect(pack, job, explicit=True))
            await say(f"-----> {names[-1]} app detected\n")
            program = await self._program(job, pack, "compile")
            compile_ = [program, str(job.build_dir), str(cache), str(env_dir)]
            status, _ = await self._step(job, [*_sourcing(exports), *compile_], say)
            if status != 0:
                raise BuildError(
                    f"buildpack {names[-1]} failed to compile the app (its bin/compile exited "
                    f"with {_describe(status)}){_limits_hint(job.limits, status)}"
                )
            if await self._has(job, pack, "-f", "export"):
                exports.append(pack.path / "export")
        infos = []
        for pack, name in zip(packs, names, strict=True):
            if await self._has(job, pack, "-e", "bin/release"):
                release = await self._program(job, pack, "release")
                status, text = await self._step(job, [release, str(job.build_dir)])
                if status != 0:
                    raise BuildError(f"buildpack {name}: bin/release exited with {status}")
                infos.append(parse_release(text, f"buildpack {name}: bin/release"))
        return Outcome(tuple(names), merge_release(infos))

    async def _choose(self, job: Job, say: Say) -> list[_Pack]:
        """The app's buildpacks: ``BUILDPACK_URL``, else its ``.buildpacks`` file, else the
        first bundled buildpack whose bin/detect says yes."""
        if "BUILDPACK_URL" in job.config:
            sources = [parse_source(job.config["BUILDPACK_URL"], "BUILDPACK_URL")]
        elif (text := read_optional(job.build_dir, ".buildpacks", _BUILDPACKS_LIMIT)) is not None:
            sources = parse_buildpacks_file(text.decode("utf-8", errors="replace"))
        elif (chosen := _bundled_choice(job)) is not None:
            return [chosen]
        else:
            raise BuildError(
                "no buildpack applies to this app. Tried: python (requirements.txt, Pipfile, "
                "pyproject.toml or setup.py), node (package.json), static (index.html without "
                "a Procfile), procfile (a Procfile). Add one of those files, or name a "
                "buildpack with: dokuenctl config:set APP BUILDPACK_URL=URL"
            )
        return [await self._fetch(source, index, job, say) for index, source in enumerate(sources)]

    async def _fetch(self, source: Source, index: int, job: Job, say: Say) -> _Pack:
        if source.bundled:
            return _Pack(source, job.bundled / source.text)
        if source.local is not None:
            if not await self._has(job, _Pack(source, source.local), "-d", "bin"):
                raise BuildError(
                    f"buildpack {source.text}: no such buildpack directory (it needs a bin/ "
                    "with detect and compile, which the build's user can read)"
                )
            return _Pack(source, source.local)
        url, ref = source.git
        target = job.workspace / "buildpacks" / str(index)
        await say(f"-----> Fetching buildpack {source.shown}")
        argv = ["git", "clone", "--quiet", "--depth", "1"]
        argv += [*(["--branch", ref] if ref else []), "--", url, str(target)]
        status, text = await self._step(job, argv, extra={"GIT_TERMINAL_PROMPT": "0"})
        if status != 0:
            error = text.strip()[-500:].replace(url, Source(url).shown)
            raise BuildError(f"cannot fetch buildpack {source.shown}: {error}")
        return _Pack(source, target)

    async def _detect(self, pack: _Pack, job: Job, *, explicit: bool) -> str:
        """The name bin/detect prints, or "" when it says no (an error when ``explicit``)."""
        status, text = await self._step(
            job, [await self._program(job, pack, "detect"), str(job.build_dir)]
        )
        if status == 0:
            return text.strip().splitlines()[0][:60] if text.strip() else pack.source.shown
        if explicit:
            raise BuildError(
                f"buildpack {pack.source.shown} does not apply to this app (its bin/detect "
                f"exited with {status}{': ' + text.strip()[-300:] if text.strip() else ''})"
            )
        return ""

    async def _has(self, job: Job, pack: _Pack, test: str, relative: str) -> bool:
        """``test -f|-d|-e|-x PACK/RELATIVE``, for a buildpack a push names (a directory, a
        git clone) as the build's user: root would tell the push whether a root-only path
        exists, through a link or by name. The bundled ones are ours, looked at directly."""
        path = pack.path / relative
        if not pack.source.bundled:
            return (await self._step(job, ["test", test, str(path)]))[0] == 0
        is_x = path.is_file() and bool(path.stat().st_mode & stat.S_IXUSR)
        return {"-f": path.is_file(), "-d": path.is_dir(), "-e": path.exists(), "-x": is_x}[test]

    async def _program(self, job: Job, pack: _Pack, name: str) -> str:
        if not await self._has(job, pack, "-f", f"bin/{name}"):
            raise BuildError(f"buildpack {pack.source.shown}: it has no bin/{name}")
        if not await self._has(job, pack, "-x", f"bin/{name}"):
            raise BuildError(
                f"buildpack {pack.source.shown}: bin/{name} is not executable "
                f"(chmod +x bin/{name} in the buildpack)"
            )
        return str(pack.path / "bin" / name)

    async def _step(
        self,
        job: Job,
        argv: list[str],
        say: Say | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> tuple[int, str]:
        """Run one build program to its end: its exit status and (without ``say``, which
        gets it live instead) its output. Cancelled, it kills its whole tree."""
        env = build_environment(job.path, job.workspace / "home", job.commit, job.uv)
        env.update(extra or {})
        limited = ["bash", "-c", _LIMITED, "dokuen-build", *_ulimits(job.limits), *argv]
        group = self._groups.get(job.workspace)
        self._steps += 1
        try:
            child = await self.spawner(
                f"exec {shlex.join(limited)}",
                env,
                job.build_dir,
                user=job.limits.user,
                profile=False,
                cgroup=group.child(f"step.{self._steps}") if group is not None else None,
            )
        except OSError as exc:
            who = f" as uid {job.limits.user}" if job.limits.user is not None else ""
            raise BuildError(
                f"cannot start the build{who}: {exc} (the build user must be able to reach "
                f"{job.build_dir}; make its parents traversable or set DOKUEN_BUILD_UIDS=off)"
            ) from None
        kept: list[str] = []
        status: int | None = None
        # Incremental: a character cut in two by a read is decoded whole.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while chunk := await child.read(1 << 16):
                text = decoder.decode(chunk)
                if say is not None:
                    await say(text)
                elif sum(map(len, kept)) < _OUTPUT_LIMIT:
                    kept.append(text)
            status = await child.wait()
            return status, "".join(kept)
        finally:
            with anyio.CancelScope(shield=True):
                # Cut short: the step and everything below it, even what left its group.
                # Done: what it left running in its group (a step leaves nothing behind).
                tree = reaper.descendants(child.pid) if status is None else []
                child.signal_group(signal.SIGKILL)
                tree += self._strays(env["HOME"])
                await anyio.to_thread.run_sync(reaper.kill_all, tree)
                await child.wait()
                await child.aclose()

    def _strays(self, home: str) -> list[psutil.Process]:
        """Daemons a step left behind that we adopted as subreaper (their parent exited):
        known by the build's own HOME in their environment."""
        found = []
        for pid in reaper.adopted(self.spawner.live):
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                if process.environ().get("HOME") == home:
                    found.append(process)
        return found


def _bundled_choice(job: Job) -> _Pack | None:
    """The first bundled buildpack whose bin/detect says yes (as data: no process), when
    the app names none (no ``BUILDPACK_URL``, no ``.buildpacks``); else None."""
    if "BUILDPACK_URL" in job.config or os.path.lexists(job.build_dir / ".buildpacks"):
        return None
    for name in BUNDLED:
        if found := detect_bundled(name, job.build_dir):
            return _Pack(Source(name), job.bundled / name, found)
    return None


def _ulimits(limits: Limits) -> list[str]:
    """RLIMIT_DATA in KiB and RLIMIT_NPROC. NPROC counts every process of the user: with no
    build user of its own, the build gets its allowance on top of what runs now."""
    processes = limits.processes
    if limits.user is None and os.geteuid() != 0:
        mine = os.getuid()
        processes += sum(1 for p in psutil.process_iter(["uids"]) if p.info["uids"].real == mine)
    return [str(limits.memory_mib * 1024), str(processes)]


def _limits_hint(limits: Limits, status: int) -> str:
    if status in (-signal.SIGKILL, -signal.SIGSEGV, 137):
        return (
            f" (it may have hit the build's memory limit of {limits.memory_mib} MiB a process: "
            "DOKUEN_BUILD_MEMORY)"
        )
    return ""


def _prepare(job: Job) -> None:
    """A fresh workspace: ENV_DIR with the config, the build's HOME; the build's directories
    handed to the build user."""
    shutil.rmtree(job.workspace, ignore_errors=True)
    job.workspace.mkdir(mode=0o700, parents=True)  # the config is in it
    (job.workspace / "home").mkdir()
    (job.workspace / "buildpacks").mkdir()
    write_envdir(job.workspace / "env", job.config)
    job.cache_dir.mkdir(parents=True, exist_ok=True)
    if job.limits.user is not None:
        for top in (job.workspace, job.cache_dir, job.build_dir, job.bundled):
            _check_reachable(top, job.limits.user)
        for top in (job.workspace, job.cache_dir, job.build_dir):
            chown_tree(top, job.limits.user, job.limits.user)


def _finish(job: Job) -> None:
    """The build is done: the release belongs to dokuend again, so no later build (of this
    or another app, as the same build user) can change it."""
    shutil.rmtree(job.workspace / "env", ignore_errors=True)
    if job.limits.user is not None:
        chown_tree(job.build_dir, os.getuid(), os.getgid())


def _sourcing(exports: list[Path]) -> list[str]:
    if not exports:
        return []
    return ["bash", "-c", _WITH_EXPORTS, "dokuen-build", *map(str, exports), "--"]


def _describe(status: int) -> str:
    return f"signal {-status}" if status < 0 else f"code {status}"


def _check_reachable(path: Path, uid: int) -> None:
    """Raise BuildError when the build's uid (its gid is the same number) cannot pass
    through a parent of ``path``."""
    for parent in reversed(path.parents):
        info = parent.stat()
        if not permits(info, uid, uid, 1):
            raise BuildError(
                f"builds (uid {uid}) cannot reach {path}: {parent} is mode "
                f"{stat.S_IMODE(info.st_mode):o} (chmod o+x {parent}, or set DOKUEN_BUILD_UIDS=off)"
            )
