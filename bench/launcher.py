"""Starting, watching and ending the processes of a bench/run.py run: the daemons (or honcho,
or the plain script) it launches, their descendants (through psutil), and command-line tools."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from harness import BenchError

try:
    import psutil
except ModuleNotFoundError:  # started outside bench/.venv: run.py re-execs in there first
    psutil = None  # type: ignore[assignment]

LAUNCHED: list[subprocess.Popen[bytes]] = []
# What every system and its processes inherit: ours, less settings that would change how
# Python programs buffer output (dokuend gives its processes a clean environment anyway).
BASE_ENV = {k: v for k, v in os.environ.items() if k not in {"PYTHONUNBUFFERED", "DOKUEN_SOCKET"}}


def launch(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    output: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a daemon (or honcho, or the plain script) in its own session, remembered so
    that an interrupted run can still end it by PID."""
    stdout: IO[bytes] | int = output.open("ab") if output else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            argv,
            env=BASE_ENV if env is None else env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if not isinstance(stdout, int):
            stdout.close()
    LAUNCHED.append(process)
    return process


def alive(process: psutil.Process) -> bool:
    """Running and not a zombie (psutil also checks the PID was not reused)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def kill_processes(processes: Iterable[psutil.Process]) -> int:
    """SIGKILL those of ``processes`` (all started by this benchmark) that still run."""
    killed = 0
    for process in processes:
        if alive(process):
            with contextlib.suppress(psutil.Error):
                process.kill()
                killed += 1
    return killed


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def free_port_range(size: int = 1000) -> str:
    """A block of ``size`` TCP ports on 127.0.0.1 that are all free right now."""
    for base in range(20000, 60000, size):
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return f"{base}-{base + size - 1}"
    raise BenchError("no free block of ports found")


def run_cli(argv: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> str:
    done = subprocess.run(
        argv,
        env=BASE_ENV if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        shown = " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BenchError(f"{shown} exited {done.returncode}: {' | '.join(detail)}")
    return done.stdout


def end_launched() -> None:
    """Kill whatever :func:`launch` started that still runs, with its descendants: only after
    an interruption is anything left."""
    for process in LAUNCHED:
        if process.poll() is None:
            tree = descendants(process.pid)
            process.kill()
            process.wait()
            kill_processes(tree)
