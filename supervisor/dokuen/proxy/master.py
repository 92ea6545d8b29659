"""The managed nginx master across a dokuend crash or re-exec: recorded when it starts
(supervise/record.py), adopted by the next dokuend when it is the very same process (pid
and start time), or stopped before a new one starts, so a new master never fails to bind
because an old one still holds the port. A master no record names (a dokuend of an older
version left it) is found by ``nginx.pid`` and the prefix on its command line."""

import contextlib
import os
import signal
import time
from pathlib import Path

import anyio
import psutil

from dokuen.events import get_logger
from dokuen.supervise import reaper
from dokuen.supervise.keeper import AdoptedChild, Keeper
from dokuen.supervise.record import ProcessRecord, start_time
from dokuen.supervise.spawn import LoopChild, PidfdChild

log = get_logger()

NAME = "master"
STOP_PATIENCE = 10.0
Master = PidfdChild | LoopChild | AdoptedChild


def record_master(keeper: Keeper, app: str, pid: int, port: int) -> ProcessRecord | None:
    """Write the new master's record; None when it already exited."""
    started = start_time(pid)
    if started is None:
        return None
    record = ProcessRecord(pid, started, app, NAME, "", port, None, None)
    keeper.records.write(record)
    return record


def _runs_on(pid: int, prefix: Path) -> bool:
    """Whether ``pid`` is an nginx master started with ``-p PREFIX``."""
    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return bool(argv) and "nginx" in argv[0] and str(prefix) in argv


def adopt_master(keeper: Keeper, app: str, prefix: Path) -> AdoptedChild | None:
    """The master a dead dokuend left, adopted; anything else of it stopped (blocking)."""
    adopted = None
    for record in keeper.records.load():
        if record.app != app:
            continue
        if adopted is None and record.alive() and _runs_on(record.pid, prefix):
            adopted = keeper.adopt(record, None)
            if adopted is not None:
                log.info("nginx.adopted", pid=record.pid)
                continue
        keeper.stop(record, STOP_PATIENCE)
    if adopted is None:
        stop_unrecorded(prefix)
    return adopted


def stop_unrecorded(prefix: Path) -> None:
    """Stop a master of this prefix that no record names (its pid file says which)."""
    try:
        pid = int((prefix / "nginx.pid").read_text().strip())
    except (OSError, ValueError):
        return
    if pid == os.getpid() or not _runs_on(pid, prefix):
        return
    log.warning("nginx.stray_master", pid=pid)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_PATIENCE
    while time.monotonic() < deadline and _group_left(pid):
        time.sleep(0.02)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    while _group_left(pid) and time.monotonic() < deadline + STOP_PATIENCE:
        time.sleep(0.02)


def _group_left(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


async def watch(child: Master) -> tuple[int, bytes]:
    """Wait for the master to exit: its status and its last output. Its exit is seen
    at once, even when workers it leaves behind (a ``kill -9``) still hold the pipe."""
    output = b""

    async def read() -> None:
        nonlocal output
        while chunk := await child.read(1 << 16):
            output = (output + chunk)[-4096:]

    async with anyio.create_task_group() as group:
        group.start_soon(read)
        status = await child.wait()
        with anyio.move_on_after(0.1):  # what it said last, if the pipe has ended
            while not group.cancel_scope.cancel_called and child.group_alive():
                await anyio.sleep(0.02)
        group.cancel_scope.cancel()
    return status, output


async def stop_master(child: Master, grace: float) -> None:
    """Fast shutdown (SIGTERM), SIGKILL after the timeout; then its workers are gone
    too (a master killed by SIGKILL leaves them holding the port)."""
    child.signal_group(signal.SIGTERM)
    with anyio.move_on_after(grace) as patience:
        await child.wait()
    if patience.cancelled_caught:
        child.signal_group(signal.SIGKILL)
        await child.wait()
    with anyio.move_on_after(grace):
        while child.group_alive():
            child.signal_group(signal.SIGKILL)
            await anyio.sleep(0.02)
    await child.aclose()


async def reload_master(master: int, prefix: Path, patience: float, settle: float) -> bool:
    """Have the master load its new config, and return once only workers with it accept:
    True; False, with nothing signalled, when ``master`` is no longer the master of
    ``prefix`` (it died, and its pid may be anyone's now: the next master reads the config).

    On SIGHUP the master starts workers with the new config, then sleeps a fixed 100 ms
    before it tells the old ones to quit (SIGQUIT), its signals blocked meanwhile. Once the
    new workers run, the old ones get that SIGQUIT from here at once: they close their
    listening sockets (shared with the new workers: a connection waits in the backlog, it
    is never refused) and finish what they serve. When the master wakes it marks them as
    exiting before it sees them exit, so it starts no replacement. A worker has stopped
    accepting once it exited (a zombie counts); a request still in flight is waited for,
    but at most ``settle`` seconds.
    """
    pidfd = open_master(master, prefix)
    if pidfd is None:
        return False
    pinned = _pin_children(master)
    old = set(pinned)
    try:
        with contextlib.suppress(ProcessLookupError):
            _signal(master, pidfd, signal.SIGHUP)
        with anyio.move_on_after(patience):  # no new workers by then: the old ones stay
            while not reaper.children(master) - old:
                await anyio.sleep(0.005)
        if not reaper.children(master) - old:
            return True
        for pidfd_of_worker in pinned.values():  # the very processes seen, never a reuse
            with contextlib.suppress(ProcessLookupError, PermissionError):
                signal.pidfd_send_signal(pidfd_of_worker, signal.SIGQUIT)
    finally:
        for descriptor in (*pinned.values(), pidfd):
            if descriptor >= 0:
                os.close(descriptor)
    with anyio.move_on_after(settle):
        while _running(reaper.children(master) & old):
            await anyio.sleep(0.005)
    return True


def open_master(pid: int, prefix: Path) -> int | None:
    """A pidfd for ``pid`` (-1 where there are none, on macOS) once it is known to be the
    nginx master of ``prefix``; None when it is not. Opened first, so that what is checked
    next is the process the pidfd pins and the signal reaches: a pid reused since the
    master died (by an app's process, another home's nginx, an ``nginx -t``) fails a check
    and is never signalled."""
    pidfd = -1
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # gone (ESRCH), or not a process we may see
            return None
    if _is_master(pid, prefix):
        return pidfd
    if pidfd >= 0:
        os.close(pidfd)
    log.warning("nginx.master_gone", pid=pid, prefix=str(prefix))
    return None


def signal_master(pid: int, prefix: Path, signum: int) -> bool:
    """Send ``signum`` to ``pid`` once it is known to be the nginx master of ``prefix``
    (``open_master``: never a pid reused since); False when it is not, or it is gone."""
    pidfd = open_master(pid, prefix)
    if pidfd is None:
        return False
    try:
        _signal(pid, pidfd, signum)
    except OSError:  # gone since (ESRCH), or not ours to signal
        return False
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    return True


def _is_master(pid: int, prefix: Path, *, pid_file: bool = True) -> bool:
    """An nginx executable, run with ``-p PREFIX`` and neither ``-t`` nor ``-s`` (a config
    test, a signal to a master), whose pid ``PREFIX/nginx.pid`` holds (``pid_file``)."""
    try:
        process = psutil.Process(pid)
        executable, argv = process.exe(), process.cmdline()
    except psutil.Error:
        return False
    if "nginx" not in Path(executable.removesuffix(" (deleted)")).name:
        return False
    if not (argv and "nginx" in argv[0] and str(prefix) in argv):
        return False
    if {"-t", "-T", "-s"} & set(" ".join(argv).split()):
        return False
    return not pid_file or _pid_in(prefix) == pid


def _pid_in(prefix: Path) -> int | None:
    try:
        return int((prefix / "nginx.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def restore_pid_file(pid: int, prefix: Path) -> None:
    """Write ``PREFIX/nginx.pid`` again for the running master when it went with its
    directory (nginx writes it at start only): the reloads check it."""
    if _pid_in(prefix) is None and _is_master(pid, prefix, pid_file=False):
        (prefix / "nginx.pid").write_text(f"{pid}\n")


def _signal(pid: int, pidfd: int, signum: int) -> None:
    if pidfd >= 0:
        signal.pidfd_send_signal(pidfd, signum)
    else:  # no pidfds (macOS): checked just before, as close as a pid allows
        os.kill(pid, signum)


def _pin_children(master: int) -> dict[int, int]:
    """A pidfd for each child of ``master`` (its old workers), opened before the master was
    told anything: a worker that exits later leaves its pidfd pointing at nothing, so a
    process that is given its pid (an app's, anyone's) is never signalled. A pid that was
    no longer the master's child once its pidfd was open is left out."""
    pinned: dict[int, int] = {}
    for pid in reaper.children(master):
        with contextlib.suppress(ProcessLookupError):
            pinned[pid] = os.pidfd_open(pid)
    still = reaper.children(master)
    for pid in set(pinned) - still:
        os.close(pinned.pop(pid))
    return pinned


def _running(pids: set[int]) -> set[int]:
    """The processes of ``pids`` that have not exited (a zombie has: it holds no socket)."""
    found = set()
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                found.add(pid)
    return found
