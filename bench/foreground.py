"""The systems under test that run in the foreground: honcho and the plain Popen script (the
yardstick). ``start`` launches them, ``stop`` sends them SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

from bootstrap import VENV_BIN
from launcher import launch
from systems import Proc, System

try:
    import psutil
except ModuleNotFoundError:  # started outside bench/.venv: run.py re-execs in there first
    psutil = None  # type: ignore[assignment]


class Foreground(System):
    """A supervisor that is its processes' parent until it exits: no daemon to prepare."""

    def stop(self) -> None:
        """SIGTERM, then wait for it to exit."""
        if self.main is None:
            return
        self.main.send_signal(signal.SIGTERM)
        try:
            self.main.wait(self.grace + 8)
        except subprocess.TimeoutExpired:
            self.stop_timed_out = True


class Honcho(Foreground):
    name = "honcho"
    restarts = False  # when one process exits, honcho stops all the others
    _SOURCE = re.compile(rb"\d\d:\d\d:\d\d p(\d\d)\.1 *\| ")

    def unavailable(self) -> str | None:
        return None if (VENV_BIN / "honcho").exists() else "not installed"

    def prepare(self, procs: list[Proc], grace: int) -> None:
        super().prepare(procs, grace)
        (self.work / "Procfile").write_text("".join(f"{p.name}: {p.command}\n" for p in procs))

    def start(self) -> None:
        argv = [str(VENV_BIN / "honcho"), "start", "--no-colour"]
        argv += ["-f", str(self.work / "Procfile"), "-d", str(self.work)]
        argv += ["-c", ",".join(f"{p.name}={p.count}" for p in self.procs)]
        self.main = launch(argv, output=self.work / "honcho.out")

    def helpers(self) -> list[psutil.Process]:
        # One forked copy of honcho per process reads its output (multiprocessing).
        if self.main is None:
            return []
        try:
            parent = psutil.Process(self.main.pid)
            cmdline = parent.cmdline()
            return [child for child in parent.children() if child.cmdline() == cmdline]
        except psutil.Error:
            return []

    def log_files(self) -> list[Path]:
        return [self.work / "honcho.out"]

    def source_of(self, path: Path, prefix: bytes) -> int | None:
        match = self._SOURCE.fullmatch(prefix)
        return int(match[1]) if match else None


PLAIN_SCRIPT = '''\
"""The yardstick: Popen each process with its output going straight to a file; on SIGTERM,
SIGTERM every process group, SIGKILL them all after the grace period, and exit."""
import json, os, signal, subprocess, sys, time

wake_read, wake_write = os.pipe()
os.set_blocking(wake_write, False)
signal.set_wakeup_fd(wake_write)
signal.signal(signal.SIGTERM, lambda signum, frame: None)
with open(sys.argv[1]) as file:
    spec = json.load(file)
children = []
for proc in spec["procs"]:
    for _ in range(proc["count"]):
        out = open(proc["log"], "ab") if proc["log"] else subprocess.DEVNULL
        children.append(subprocess.Popen(
            ["/bin/sh", "-c", proc["command"]], stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True))
        if proc["log"]:
            out.close()
os.read(wake_read, 1)
deadline = time.monotonic() + spec["grace"]
for child in children:
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
for child in children:
    try:
        child.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
for child in children:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()
'''


class Plain(Foreground):
    name = "plain"
    restarts = False

    def prepare(self, procs: list[Proc], grace: int) -> None:
        super().prepare(procs, grace)
        (self.work / "plain.py").write_text(PLAIN_SCRIPT)
        spec = {
            "grace": grace,
            "procs": [
                {"command": p.command, "count": p.count, "log": str(p.log) if p.log else None}
                for p in procs
            ],
        }
        (self.work / "plain.json").write_text(json.dumps(spec))

    def start(self) -> None:
        script, spec = self.work / "plain.py", self.work / "plain.json"
        self.main = launch([sys.executable, str(script), str(spec)], output=self.work / "plain.out")
