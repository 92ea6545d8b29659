"""One dokuend per home: an exclusive ``flock`` on ``$DOKUEN_HOME/dokuend.lock``, which holds
the pid of the dokuend that has it.

Taken before anything else touches the home (the PostgreSQL cluster, the control socket,
nginx, the log), so a second dokuend changes nothing; the kernel drops the lock when its
holder dies, even by ``kill -9``, so a stale file never keeps a new dokuend out.
"""

import contextlib
import fcntl
import os
from pathlib import Path

from dokuen.errors import AlreadyRunning

LOCK_FILE = "dokuend.lock"


def lock_home(home: Path) -> int:
    """Take the home's lock and write our pid into it; return the descriptor that holds it
    (close-on-exec, so no child inherits the lock). Keep it open for the daemon's life.

    Raises AlreadyRunning naming the holder's pid when another dokuend has the lock.
    """
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise AlreadyRunning(
            f"another dokuend (pid {holder}) runs on {home} "
            f"(stop it first, or give this one another home: dokuend --home DIR)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    # A full disk must not keep the daemon from starting: the lock is what counts, the pid
    # is for the message of the next one.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _holder(fd: int) -> str:
    """The pid the lock's holder wrote (``unknown`` while it is still writing it)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
