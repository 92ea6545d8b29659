"""What the benchmarks share: a fresh dokuend of the project's .venv in a directory of its
own, driven through dokuenctl, and stopped by its pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"


class BenchError(Exception):
    """A step of a benchmark failed."""


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``predicate`` every ``interval`` seconds (more often costs the load generators
    of a benchmark their CPU) until it holds; BenchError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Dokuend:
    """One dokuend with its state in ``home`` and these ``settings`` (DOKUEN_* variables);
    its stderr goes to ``dokuend.out`` beside ``home``."""

    home: Path
    settings: Mapping[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    command: list[str] | None = None  # instead of the .venv's dokuend

    def env(self) -> dict[str, str]:
        # Temporary directories are private to root: builds run as dokuend's user here.
        builds = {"DOKUEN_BUILD_UIDS": "off", "DOKUEN_APP_UIDS": "off"} if os.geteuid() == 0 else {}
        return {**os.environ, "DOKUEN_HOME": str(self.home), **builds, **self.settings}

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home.parent / "dokuend.out").open("wb") as log:
            self.proc = subprocess.Popen(
                self.command or [str(BIN / "dokuend")], env=self.env(), stderr=log
            )
        wait_for(
            lambda: (
                (self.proc is not None and self.proc.poll() is not None)
                or self.ctl("status", check=False).returncode == 0
            ),
            15,
            "dokuend to answer",
        )
        if self.proc.poll() is not None:
            raise BenchError(f"dokuend exited with {self.proc.returncode}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            print(f"dokuend (pid {self.proc.pid}) did not stop in 60 s: SIGKILL")
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "dokuenctl"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise BenchError(f"dokuenctl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def timed(self, *args: str) -> float:
        """Seconds ``dokuenctl ARGS`` took (it must succeed)."""
        began = time.monotonic()
        self.ctl(*args)
        return time.monotonic() - began


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
