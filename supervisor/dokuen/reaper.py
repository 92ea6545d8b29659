"""Catching what a process leaves behind when it dies or is stopped.

Processes that call setsid() leave the process group, so a signal to the group misses them.
On Linux dokuend is a child subreaper (prctl PR_SET_CHILD_SUBREAPER): orphaned descendants
of its processes become its own children instead of init's, so it can find them (by the
APP and DYNO variables they inherited), kill them and reap them.
"""

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys

import psutil

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return False
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def descendants(pid: int) -> list[psutil.Process]:
    """The live descendants of ``pid`` (empty when it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def in_group(process: psutil.Process, pgid: int) -> bool:
    """True when ``process`` runs (not a zombie) in process group ``pgid``."""
    try:
        return os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE
    except (OSError, psutil.Error):
        return False


def orphans_of(app: str, dyno: str, spawned: set[int]) -> list[psutil.Process]:
    """Our adopted children that were started by process ``dyno`` of ``app``: the ones we did
    not spawn ourselves whose environment says APP=app and DYNO=dyno."""
    found = []
    for child in psutil.Process().children():
        if child.pid in spawned:
            continue
        with contextlib.suppress(psutil.Error):
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
    """Reap adopted children that already exited, leaving our own spawned ones alone
    (the event loop reaps those; reaping them here would steal their exit status)."""
    for child in psutil.Process().children():
        if child.pid in spawned:
            continue
        with contextlib.suppress(psutil.Error, ChildProcessError, OSError):
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
