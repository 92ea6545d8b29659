"""Real child processes: started in their own session, read, waited for, and their whole
tree signalled. ``OsSpawner`` is the production ``Spawner`` of process.py.

On Linux a child is started with ``subprocess.Popen`` (vfork and exec: about five times
faster than the event loop's own spawn) and watched through a pidfd, so its exit wakes the
loop like any readable file. Elsewhere the loop's subprocess support does both.
"""

import contextlib
import os
import pwd
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypedDict

import anyio
import anyio.abc
import psutil

from dokuen.events import get_logger
from dokuen.isolate.cgroups import Cgroups, Group
from dokuen.supervise import readiness, reaper
from dokuen.supervise.intake import Outlet
from dokuen.supervise.streams import NO_INPUT, Stdio

log = get_logger()

HAVE_PIDFD = hasattr(os, "pidfd_open")
SPAWN_THREADS = 4  # spawns at once while `OsSpawner.overlapping`: more gain nothing on 2 cores
DISCARD_WAIT = 5.0  # seconds to empty and remove a dead child's cgroup before giving up
# What keeps a command from being run with `exec`: shell syntax that needs the shell to
# stay, or a first word that is an assignment, a keyword or a builtin exec cannot run.
_COMPOUND = re.compile(r"[;&|<>()`\n]")
_NOT_A_PROGRAM = re.compile(
    r"\s*(?:[A-Za-z_][A-Za-z0-9_]*=|(?:exec|exit|if|for|while|until|case|function|cd|export|set"
    r"|trap|ulimit|umask|source|eval|\.|\{|!|\[\[)(?:\s|$))"
)


def exec_form(command: str) -> str:
    """``exec COMMAND`` when the command is one plain program, so that the shell becomes it:
    its pid is the app's, signals reach it, its exit status is the app's. Anything with
    shell syntax is left to the shell as written."""
    if _COMPOUND.search(command) or _NOT_A_PROGRAM.match(command):
        return command
    return f"exec {command}"


# What a buildpack leaves for run time (the buildpack API): sourced before the command, from
# the release (the cwd). Those scripts say $HOME for the app's root, as on Heroku where both
# are /app: HOME is the release while they run, and the app's own HOME again after.
_PROFILE = (
    '_dokuen_home=$HOME; HOME=$PWD; for f in ./.profile.d/*.sh ./.profile; do [ -f "$f" ] && '
    '. "$f"; done; HOME=$_dokuen_home; unset _dokuen_home; '
)


def with_profile(command: str, cwd: Path) -> str:
    """The command after .profile.d/*.sh and .profile: root sees names, the app's shell reads."""
    if os.path.lexists(cwd / ".profile") or os.path.lexists(cwd / ".profile.d"):
        return _PROFILE + exec_form(command)
    return exec_form(command)


class _OsChild:
    """What every real child shares: its process group and the tree below it, or, with
    cgroups, its cgroup: every process it started, wherever it went (setsid, double forks)."""

    def __init__(self, pid: int, spawner: "OsSpawner", cgroup: Group | None) -> None:
        self.pid, self._spawner, self.cgroup = pid, spawner, cgroup
        self._tree: list[psutil.Process] = []

    def signal_group(self, signum: int) -> None:
        if signum == signal.SIGTERM and self.cgroup is None:
            # Remember the tree while its links are intact, to find who leaves the group.
            self._tree = reaper.descendants(self.pid)
        # start_new_session made the child the leader of a group whose id is its pid.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)
        if self.cgroup is not None and signum == signal.SIGKILL:
            self.cgroup.kill()  # all at once: nothing forks away between two kills
        elif self.cgroup is not None:  # those that left the process group, once each
            for pid in self.cgroup.pids():
                with contextlib.suppress(OSError):
                    if os.getpgid(pid) != self.pid:
                        os.kill(pid, signum)

    def group_alive(self) -> bool:
        if not self._spawner.spawning:  # a child spawned in a thread is not in `live` yet
            reaper.reap_strays(self._spawner.live)
        if self.cgroup is not None:  # a zombie has left its cgroup already
            return bool(self.cgroup.pids())
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # The group exists, but a zombie (that init or we have yet to reap) still counts
        # as a member: alive means some member still runs.
        return any(reaper.in_group(p, self.pid) for p in self._candidates())

    def _candidates(self) -> list[psutil.Process]:
        if not self._spawner.subreaper:
            return list(psutil.process_iter())
        found = list(self._tree)
        for pid in reaper.adopted(self._spawner.live):
            with contextlib.suppress(psutil.Error):
                found += [psutil.Process(pid), *reaper.descendants(pid)]
        return found

    def leftovers(self, app: str, dyno: str) -> list[psutil.Process]:
        if self.cgroup is not None:  # nothing leaves a cgroup: group_alive saw them all
            return []
        found = {p.pid: p for p in self._tree if _running(p)}
        for orphan in reaper.orphans_of(app, dyno, self._spawner.live):
            found.setdefault(orphan.pid, orphan)
        return list(found.values())

    async def _discard_cgroup(self) -> None:
        """Remove the child's cgroup once it is empty (killing what still runs in it)."""
        if self.cgroup is None:
            return
        try:
            # Bounded in time, not in tries: on cgroup v1 a kill waits for the freezer, which
            # never freezes a process stuck in D state (ending.py reports that one).
            deadline = time.monotonic() + DISCARD_WAIT
            while time.monotonic() < deadline:
                if self.cgroup.remove():
                    return
                self.cgroup.kill()
                await anyio.sleep(0.02)
            log.warning("cgroup.not_removed", group=str(self.cgroup.name), pids=self.cgroup.pids())
        except OSError as exc:
            log.warning("cgroup.not_removed", group=str(self.cgroup.name), error=str(exc))


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class PidfdChild(_OsChild):
    """A Popen child whose output pipe and pidfd are watched by the event loop."""

    def __init__(
        self, process: "subprocess.Popen[bytes]", spawner: "OsSpawner", cgroup: Group | None
    ) -> None:
        super().__init__(process.pid, spawner, cgroup)
        self._process, self._output = process, process.stdout  # None: output elsewhere
        process.args = ()  # its argv (the cgroup entry's paths, the command): never read again
        if self._output is not None:
            os.set_blocking(self._output.fileno(), False)
        self._pidfd = os.pidfd_open(process.pid)

    def outlet(self) -> Outlet | None:
        if self._output is None or self._output.closed:
            return None
        return Outlet(self._output.fileno())

    async def read(self, max_bytes: int) -> bytes:
        if self._output is None or self._output.closed:
            return b""
        fd = self._output.fileno()
        while True:
            with contextlib.suppress(BlockingIOError):
                if not (data := os.read(fd, max_bytes)):
                    self._output.close()
                return data
            await readiness.wait_readable(fd)

    def exit_fd(self) -> int | None:
        return self._pidfd if self._process.returncode is None else None

    async def wait(self) -> int:
        while self._process.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)  # noqa: ASYNC222 (WNOHANG)
            if pid:
                # Popen never waits itself: setting returncode keeps it from warning.
                self._process.returncode = os.waitstatus_to_exitcode(status)
                self._spawner.live.discard(self.pid)
                os.close(self._pidfd)
                break
            await readiness.wait_readable(self._pidfd)
        return self._process.returncode

    async def aclose(self) -> None:
        if self._output is not None:
            self._output.close()
        await self._discard_cgroup()


class LoopChild(_OsChild):
    """A child started and watched by the event loop's own subprocess support."""

    def __init__(
        self, process: anyio.abc.Process, spawner: "OsSpawner", cgroup: Group | None
    ) -> None:
        super().__init__(process.pid, spawner, cgroup)
        self._process = process

    def outlet(self) -> Outlet | None:
        return None  # the loop's transport reads its pipe: read() it is

    def exit_fd(self) -> int | None:
        return None  # the loop's child watcher tells, through wait()

    async def read(self, max_bytes: int) -> bytes:
        if self._process.stdout is None:  # the output went elsewhere (Stdio)
            return b""
        try:
            return await self._process.stdout.receive(max_bytes)
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return b""

    async def wait(self) -> int:
        code = await self._process.wait()
        self._spawner.live.discard(self.pid)
        return code

    async def aclose(self) -> None:
        await self._process.aclose()  # its streams, and the transport with them
        await self._discard_cgroup()


class _Options(TypedDict):
    env: dict[str, str]
    cwd: Path
    stdin: int
    stdout: int
    stderr: int
    start_new_session: bool
    user: str | int | None
    group: int | None
    extra_groups: list[int] | None


def _popen(argv: list[str], options: _Options) -> "subprocess.Popen[bytes]":
    return subprocess.Popen(argv, **options)


class OsSpawner:
    """Starts ``/bin/sh -c COMMAND`` in a new session with exactly the given environment,
    stdout and stderr on one pipe, and remembers which live children are ours (so the
    reaper never steals their exit status). Given a cgroup, the child enters it first."""

    def __init__(
        self,
        subreaper: bool = False,
        use_pidfd: bool = HAVE_PIDFD,
        cgroups: Cgroups | None = None,
    ) -> None:
        self.live: set[int] = set()
        self.subreaper = subreaper  # True when orphans of our processes come to us
        self.use_pidfd = use_pidfd
        self.cgroups = cgroups  # None: no cgroups here (or DOKUEN_CGROUPS=off)
        self.spawning = self._overlapping = 0  # spawns in threads now (not yet in `live`)
        self._spawn_threads = anyio.CapacityLimiter(SPAWN_THREADS)

    async def __call__(
        self,
        command: str,
        env: Mapping[str, str],
        cwd: Path,
        *,
        user: int | None = None,
        profile: bool = True,
        cgroup: Group | None = None,
        stdio: Stdio = NO_INPUT,
    ) -> "PidfdChild | LoopChild":
        """Start ``command``; with ``profile``, after what the release's buildpacks left to
        source (``with_profile``); as uid ``user`` (gid the same number, no other groups);
        in ``cgroup`` (made now, removed by ``aclose``) when cgroups are on."""
        argv = ["/bin/sh", "-c", with_profile(command, cwd) if profile else exec_form(command)]
        return await self.exec(argv, env, cwd, user=user, cgroup=cgroup, stdio=stdio)

    async def exec(
        self,
        argv: list[str],
        env: Mapping[str, str],
        cwd: Path,
        *,
        user: str | int | None = None,
        cgroup: Group | None = None,
        stdio: Stdio = NO_INPUT,
    ) -> "PidfdChild | LoopChild":
        """Start the program ``argv`` itself, no shell between (what it is given, names and
        all, is never parsed by one); the rest as for a command. ``user`` is a user name
        (with its own group) or a uid (with the gid of the same number), no other groups.
        ``stdio``: its streams (streams.py; by default /dev/null in, one pipe out)."""
        if self.cgroups is None:
            cgroup = None
        if cgroup is not None:
            assert self.cgroups is not None
            # Root's shell enters the group, then drops to the user (Popen's own setuid
            # would come first), seeing none of the app's environment (carried.py).
            uid = pwd.getpwnam(user).pw_uid if isinstance(user, str) else user
            (argv, env), user = self.cgroups.enter(cgroup, uid, argv, env), None
            cgroup.create()
        try:
            return await self._start(argv, env, cwd, user, cgroup, stdio)
        except BaseException:
            if cgroup is not None:
                with contextlib.suppress(OSError):
                    cgroup.remove()
            raise

    async def _start(
        self,
        argv: list[str],
        env: Mapping[str, str],
        cwd: Path,
        user: str | int | None,
        cgroup: Group | None,
        stdio: Stdio,
    ) -> "PidfdChild | LoopChild":
        group = user if not isinstance(user, str) else pwd.getpwnam(user).pw_gid
        argv = stdio.argv(argv)  # with a terminal, setsid --ctty makes the new session
        options = _Options(
            env=dict(env),
            cwd=cwd,
            stdin=stdio.stdin,
            stdout=stdio.output,
            stderr=subprocess.STDOUT if stdio.output == subprocess.PIPE else stdio.output,
            start_new_session=not stdio.terminal,
            user=user,
            group=group,
            extra_groups=None if user is None else [],
        )
        child: PidfdChild | LoopChild
        if not self.use_pidfd:
            child = LoopChild(await anyio.open_process(argv, **options), self, cgroup)
        elif not self._overlapping:  # vfork+exec in about half a millisecond: no thread hop
            child = PidfdChild(_popen(argv, options), self, cgroup)
        else:  # the reaper waits meanwhile: a child that exits at once is still ours
            self.spawning += 1
            try:  # shielded: a child once started must reach `live` and the caller
                with anyio.CancelScope(shield=True):
                    popen = await anyio.to_thread.run_sync(
                        _popen, argv, options, limiter=self._spawn_threads
                    )
                child = PidfdChild(popen, self, cgroup)
            finally:
                self.spawning -= 1
        self.live.add(child.pid)
        return child

    @contextlib.contextmanager
    def overlapping(self) -> Iterator[None]:
        """While this lasts (a start's restore of every app), spawns run in worker threads,
        where the vfork parents' waits for exec (4 ms when loaded) overlap."""
        self._overlapping += 1
        try:
            yield
        finally:
            self._overlapping -= 1

    async def reap_orphans(self) -> None:
        """Reap, as subreaper, what our processes orphaned and then exited (reaper.py)."""
        if self.subreaper:
            await reaper.reap_orphans(self.live, lambda: self.spawning > 0)

    async def run(
        self,
        argv: list[str],
        cwd: Path,
        *,
        env: Mapping[str, str] | None = None,
        user: str | int | None = None,
    ) -> tuple[int, bytes]:
        """Run a helper program (``nginx -t``, ``pg_dump``) to its end: its status and output.

        Through this spawner, not the event loop's own, so the reaper knows it is ours. If
        the caller is cancelled, the program's group is killed and reaped before this returns.
        """
        child = await self.exec(argv, {"PATH": os.defpath} if env is None else env, cwd, user=user)
        chunks = []
        done = False
        try:
            while chunk := await child.read(1 << 16):
                chunks.append(chunk)
            status = await child.wait()
            done = True
        finally:
            with anyio.CancelScope(shield=True):
                if not done:
                    child.signal_group(signal.SIGKILL)
                    await child.wait()
                await child.aclose()
        return status, b"".join(chunks)
