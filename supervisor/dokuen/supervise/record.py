"""The on-disk record of what dokuend runs, so that a dokuend started after a crash (or a
re-exec) finds what the last one left: one small JSON file per running process under
``HOME/run/processes``, written atomically when the process starts and removed when it
has ended. A process is known by its pid AND its start time (``/proc/PID/stat``, field
22): a pid reused by another process never matches.
"""

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from dokuen.events import get_logger

log = get_logger()

RUN_DIR = "run"  # under DOKUEN_HOME: root-only (0700), derived data


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None when there is no such
    process. A zombie keeps its start time until it is reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None  # Linux: no such process
        try:  # no /proc (macOS): the creation time in hundredths of a second
            return int(psutil.Process(pid).create_time() * 100)
        except psutil.Error:
            return None
    except OSError:
        return None
    # The command (field 2) is in parentheses and may hold spaces or ')': split after it.
    fields = text[text.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return False
    return text[text.rfind(b")") + 2 :].startswith(b"Z")


@dataclass(frozen=True)
class ProcessRecord:
    """One running process: which, where its output goes and what it may be adopted as."""

    pid: int
    start: int  # start_time(pid) when it was spawned
    app: str
    name: str  # web.1; "master" for nginx
    release: str  # the release's name (v3); "" for nginx
    port: int | None
    cgroup: str | None  # its cgroup, relative to the hierarchy (None: no cgroups)
    fifo: str | None  # the named pipe its stdout and stderr go to

    @property
    def key(self) -> str:
        return f"{self.app}.{self.name}.{self.pid}"

    def alive(self) -> bool:
        """The very process of the record still exists (running, or a zombie of ours)."""
        return start_time(self.pid) == self.start


class Records:
    """The records under ``directory``; every write replaces a whole file (rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, record: ProcessRecord) -> None:
        """Record a process; an error (a full disk) is logged: the process runs anyway,
        it just cannot be adopted after a crash."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self.directory / f"{record.key}.json"
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(asdict(record)))
            temporary.replace(path)
        except OSError as exc:
            log.error("record.write_failed", process=record.key, error=str(exc))

    def remove(self, record: ProcessRecord) -> None:
        with contextlib.suppress(OSError):
            (self.directory / f"{record.key}.json").unlink()

    def load(self) -> list[ProcessRecord]:
        """Every readable record; unreadable ones are logged and removed."""
        found = []
        try:
            paths = sorted(self.directory.glob("*.json"))
        except OSError:
            return []
        for path in paths:
            try:
                found.append(ProcessRecord(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("record.unreadable", file=str(path), error=str(exc))
                with contextlib.suppress(OSError):
                    path.unlink()
        for temporary in self.directory.glob("*.tmp"):
            with contextlib.suppress(OSError):
                temporary.unlink()
        return found


def fifo_directory(run: Path) -> Path:
    return run / "fifo"


def ensure_private(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
