"""Catching what a process leaves behind when it dies or is stopped.

Processes that call setsid() leave the process group, so a signal to the group misses them.
On Linux dokuend is a child subreaper (prctl PR_SET_CHILD_SUBREAPER): orphaned descendants
of its processes become its own children instead of init's, so it can find them (by the
APP and DYNO variables they inherited), kill them and reap them.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import anyio
import psutil

PR_SET_CHILD_SUBREAPER = 36
SPAWNING_WAIT = 0.05  # seconds between looks at whether the spawns under way are done


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The running program's own symbols, libc's among them (ctypes.util.find_library
        # would run ldconfig and import shutil, tempfile, lzma and bz2 for the whole life),
        # called through _ctypes alone: ctypes' own module, its types made at import, is
        # 0.16 MiB more for the daemon's life (docs/benchmarks.md, workload 3).
        import _ctypes  # noqa: PLC0415 (once, at start)

        prctl = _ctypes.dlsym(_ctypes.dlopen(None), "prctl")  # type: ignore[arg-type]
        return bool(_ctypes.call_function(prctl, (PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0)
    except (ImportError, AttributeError, OSError):  # no _ctypes, or one without these
        return _by_ctypes()


def _by_ctypes() -> bool:
    import ctypes  # noqa: PLC0415 (where _ctypes lacks what the line above calls)

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def children(pid: int) -> set[int]:
    """The pids of ``pid``'s direct children.

    On Linux this reads /proc/PID/task/*/children, which costs as much as the children are
    many; psutil's way scans every process on the machine, too slow to do once per process
    when 200 of them stop at once.
    """
    try:
        found: set[int] = set()
        for task in os.scandir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task.name}/children", encoding="ascii") as listing:
                found.update(int(child) for child in listing.read().split())
        return found
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{pid}"):
            return set()  # gone
    except OSError:
        pass
    try:  # no /proc children files here (not Linux, or an old kernel)
        return {child.pid for child in psutil.Process(pid).children()}
    except psutil.Error:
        return set()


def descendants(pid: int) -> list[psutil.Process]:
    """The descendants of ``pid``, walking down from it (empty when it is gone)."""
    found: list[psutil.Process] = []
    todo = list(children(pid))
    while todo:
        child = todo.pop()
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(child))
            todo.extend(children(child))
    return found


def adopted(spawned: set[int]) -> set[int]:
    """Our children that we did not spawn: orphans we adopted as a subreaper."""
    return children(os.getpid()) - spawned


def in_group(process: psutil.Process, pgid: int) -> bool:
    """True when ``process`` runs (not a zombie) in process group ``pgid``."""
    try:
        return os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE
    except (OSError, psutil.Error):
        return False


def orphans_of(app: str, dyno: str, spawned: set[int]) -> list[psutil.Process]:
    """Adopted children that were started by process ``dyno`` of ``app``: their environment
    says APP=app and DYNO=dyno."""
    found = []
    for pid in adopted(spawned):
        with contextlib.suppress(psutil.Error):
            child = psutil.Process(pid)
            environ = child.environ()
            if environ.get("APP") == app and environ.get("DYNO") == dyno:
                found.append(child)
    return found


def kill_all(processes: list[psutil.Process]) -> int:
    """SIGKILL each still-running process (and its own descendants); reap our children
    among them. Returns how many were killed."""
    targets: dict[int, psutil.Process] = {}
    for process in processes:
        for each in [process, *descendants(process.pid)]:
            targets.setdefault(each.pid, each)
    killed = 0
    for process in targets.values():
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                process.send_signal(signal.SIGKILL)
                killed += 1
    for pid in targets:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
    return killed


def reap_strays(spawned: set[int]) -> None:
    """Reap adopted children that already exited. Our own spawned children are left to the
    event loop: reaping one here would steal its exit status. So every process dokuend
    starts must be in ``spawned`` while it runs. Nor a child in our own session: a helper
    a thread runs (``subprocess.run``: git, ssh-keygen, ``dokuend --version``), whose
    status is that thread's (stolen, it would read 0: a failure taken for a success);
    what we adopt comes from our processes, each started in a session of its own."""
    ours = os.getsid(0)
    for pid in adopted(spawned):
        with contextlib.suppress(ChildProcessError, OSError):
            if os.getsid(pid) != ours:
                os.waitpid(pid, os.WNOHANG)


async def reap_orphans(spawned: set[int], spawning: Callable[[], bool]) -> None:
    """Reap adopted children that exit while their process lives on (a `(cmd &)` in a
    loop): a look now, then at each SIGCHLD (the kernel's word that a child of ours
    exited), so an idle daemon never wakes for it. Started once every process a dead or
    re-exec'd dokuend left is in ``spawned`` again; waits while ``spawning``: a child
    spawned in a thread is not in ``spawned`` yet."""
    with anyio.open_signal_receiver(signal.SIGCHLD) as exits:
        while True:
            while spawning():
                await anyio.sleep(SPAWNING_WAIT)
            reap_strays(spawned)
            await anext(exits)


def kill_uid(uid: int, patience: float = 10.0) -> bool:
    """Kill every process that runs as ``uid``, wherever it went (a new session, a new
    HOME, a parent that exited), even one that forks and exits faster than a listing of
    processes can see it ("fork-hopping"): a shell run as ``uid`` sends SIGKILL to -1,
    which the kernel delivers to every process of the uid at once, so none forks away.
    Repeated until none is left; False if some survived ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["/bin/sh", "-c", "kill -9 -1"],
                user=uid,
                group=uid,
                extra_groups=[],
                env={"PATH": os.defpath},
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=patience,
                check=False,
            )
        left = [
            p
            for p in psutil.process_iter(["uids", "status"])
            if uid in (p.info["uids"] or ()) and p.info["status"] != psutil.STATUS_ZOMBIE
        ]
        if not left:  # zombies among them that we adopted: the daemon's reaper takes them
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
