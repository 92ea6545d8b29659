"""The process supervisors under test that run as daemons, driven by their control commands:
the :class:`System` they all are, dokuend, supervisord and circus (honcho and the plain script
are in foreground.py)."""

from __future__ import annotations

import abc
import json
import os
import re
import shlex
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bootstrap import VENV_BIN
from harness import BIN as DOKUEN_BIN
from harness import BenchError, wait_for
from launcher import (
    BASE_ENV,
    alive,
    descendants,
    free_port_range,
    kill_processes,
    launch,
    run_cli,
    socket_answers,
)

try:
    import psutil
except ModuleNotFoundError:  # started outside bench/.venv: run.py re-execs in there first
    psutil = None  # type: ignore[assignment]

DOKUEN_APP = "bench"
DOKUEN_MAX_SCALE = 500  # dokuend's ps:scale limit per type: a bigger count becomes more types


@dataclass(frozen=True)
class Proc:
    """``count`` copies of one command; every system runs it through ``/bin/sh -c``."""

    name: str
    command: str
    count: int = 1
    log: Path | None = None  # where a per-process log goes (count 1 only)


class System(abc.ABC):
    """One process supervisor under test. ``prepare`` brings its daemon up with the
    processes configured but not started, ``start``/``stop`` are the timed commands,
    ``shutdown`` ends the daemon and anything it left behind."""

    name: ClassVar[str] = ""
    restarts: ClassVar[bool] = True  # restarts a process that dies

    def __init__(self, work: Path) -> None:
        self.work = work
        self.main: subprocess.Popen[bytes] | None = None
        self.procs: list[Proc] = []
        self.grace = 10
        self.stop_timed_out = False

    def unavailable(self) -> str | None:
        return None

    def prepare(self, procs: list[Proc], grace: int) -> None:
        self.procs, self.grace = procs, grace

    @abc.abstractmethod
    def start(self) -> None:
        """Start every configured process (the timed command)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop every process (the timed command)."""

    def running_by_status(self) -> int | None:
        """How many processes the system itself says are running, when it is cheap to ask."""
        return None

    def log_files(self) -> list[Path]:
        return [proc.log for proc in self.procs if proc.log is not None]

    def source_of(self, path: Path, prefix: bytes) -> int | None:
        """Which printer a log line claims to come from, judged by the system's own framing
        (the file for per-process logs, the prefix for a merged stream)."""
        return int(path.stem[1:]) if not prefix else None

    @property
    def pid(self) -> int:
        if self.main is None or self.main.poll() is not None:
            raise BenchError(f"{self.name} is not running")
        return self.main.pid

    def helpers(self) -> list[psutil.Process]:
        """Processes of the supervisor itself besides the main one (honcho forks some)."""
        return []

    def supervisor(self) -> list[psutil.Process]:
        return [psutil.Process(self.pid), *self.helpers()]

    def workload(self) -> list[psutil.Process]:
        """Every live descendant that is not one of the supervisor's own helpers."""
        if self.main is None or self.main.poll() is not None:
            return []
        helpers = {p.pid for p in self.helpers()}
        return [p for p in descendants(self.main.pid) if p.pid not in helpers and alive(p)]

    def shutdown(self, timeout: float = 20) -> None:
        """SIGTERM the daemon, SIGKILL it after ``timeout``, then kill what it left."""
        if self.main is None:
            return
        left = descendants(self.main.pid)
        if self.stop_timed_out:  # it already ignored one request to stop: do not wait long
            timeout = 2
        if self.main.poll() is None:
            self.main.send_signal(signal.SIGTERM)
            try:
                self.main.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"    {self.name} still running {timeout:g}s after SIGTERM; killing it")
                self.main.kill()
                self.main.wait()
        kill_processes(left)
        self.main = None


COMPILE_DOKUEN = "import compileall, dokuen; compileall.compile_dir(dokuen.__path__[0], quiet=1)"


class Dokuend(System):
    name = "dokuend"
    # dokuend and dokuenctl: the project's .venv, or DOKUEN_BENCH_BIN's (a snapshot that
    # does not change under a long run while the working tree does)
    bin: ClassVar[Path] = Path(os.environ.get("DOKUEN_BENCH_BIN", DOKUEN_BIN))
    _SOURCE = re.compile(rb"\S+ " + DOKUEN_APP.encode() + rb"\[p(\d\d)\.1\]: ")

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.home = work / "home"
        self.socket = self.home / "dokuend.sock"
        self.env = BASE_ENV | {
            "DOKUEN_HOME": str(self.home),
            "DOKUEN_PORT_RANGE": free_port_range(),
            "DOKUEN_LOG_MAX_BYTES": "2000000000",
            # Builds as root run as a uid of their own that cannot enter the benchmark's
            # root-private temporary directory: build as dokuend's user (as harness.py does).
            **({"DOKUEN_BUILD_UIDS": "off", "DOKUEN_APP_UIDS": "off"} if os.geteuid() == 0 else {}),
        }

    def unavailable(self) -> str | None:
        missing = [n for n in ("dokuend", "dokuenctl") if not (self.bin / n).exists()]
        return f"{', '.join(missing)} not in {self.bin}" if missing else None

    def ctl(self, *args: str) -> str:
        return run_cli([str(self.bin / "dokuenctl"), *args], self.env)

    def request(self, command: str, args: dict[str, Any]) -> Any:
        """One request on the control socket (the protocol dokuenctl speaks), without the
        cost of starting dokuenctl: for polling."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(self.socket))
            client.sendall(json.dumps({"command": command, "args": args}).encode() + b"\n")
            with client.makefile("rb") as replies:
                for line in replies:
                    message = json.loads(line)
                    if "output" in message:
                        continue
                    if message.get("ok"):
                        return message.get("result")
                    raise BenchError(f"dokuend: {message.get('error')}")
        raise BenchError("dokuend closed the control connection without an answer")

    def types(self) -> list[tuple[str, int, str]]:
        """(process type, scale, command): counts above the scale limit become several types."""
        found = []
        for proc in self.procs:
            if proc.count <= DOKUEN_MAX_SCALE:
                found.append((proc.name, proc.count, proc.command))
                continue
            chunks = range(0, proc.count, DOKUEN_MAX_SCALE)
            for number, start in enumerate(chunks, 1):
                count = min(DOKUEN_MAX_SCALE, proc.count - start)
                found.append((f"{proc.name}{number}", count, proc.command))
        return found

    def compile_package(self) -> None:
        """Write dokuen's bytecode, as ``pip install`` does for an installed dokuen (and did
        for supervisord): an editable checkout under PYTHONDONTWRITEBYTECODE would otherwise
        compile every module at each start, and the parser's freed memory stays in the
        daemon's heap (0.6-0.8 MiB of RSS at idle: docs/benchmarks.md, W3 part 3)."""
        subprocess.run(
            [str(self.bin / "python"), "-c", COMPILE_DOKUEN],
            check=True,
            env=BASE_ENV,
            stdout=subprocess.DEVNULL,
        )

    def prepare(self, procs: list[Proc], grace: int) -> None:
        super().prepare(procs, grace)
        self.compile_package()
        self.main = launch(
            [str(self.bin / "dokuend")], env=self.env, output=self.work / "dokuend.err"
        )
        wait_for(lambda: socket_answers(self.socket), 20, "dokuend's control socket", 0.01)
        source = self.work / "src"
        source.mkdir()
        types = self.types()
        procfile = "".join(f"{name}: {command}\n" for name, _count, command in types)
        (source / "Procfile").write_text(procfile)
        self.ctl("apps:create", DOKUEN_APP)
        self.ctl("config:set", DOKUEN_APP, f"DOKUEN_STOP_TIMEOUT={grace}")
        # A deploy starts one process per type: stop them, then set the real scale, so
        # that the timed ``start`` starts everything from nothing as the peers do.
        self.ctl("deploy", DOKUEN_APP, str(source))
        self.ctl("stop", DOKUEN_APP)
        scale = [f"{name}={count}" for name, count, _command in types if count != 1]
        if scale:
            self.ctl("ps:scale", DOKUEN_APP, *scale)

    def start(self) -> None:
        self.ctl("start", DOKUEN_APP)

    def stop(self) -> None:
        self.ctl("stop", DOKUEN_APP)

    def running_by_status(self) -> int | None:
        rows = self.request("ps", {"app": DOKUEN_APP})
        return sum(1 for row in rows if row["state"] == "running")

    def log_files(self) -> list[Path]:
        return [self.home / "logs" / "dokuen.log"]

    def source_of(self, path: Path, prefix: bytes) -> int | None:
        match = self._SOURCE.fullmatch(prefix)
        return int(match[1]) if match else None


class DokuendBase(Dokuend):
    """Another build of dokuend (the one a change is measured against: main, say), from the
    directory that ``DOKUEN_BENCH_BASE`` names (a virtualenv's bin/ with dokuend installed
    in it, not editable), run exactly as dokuend is."""

    name = "dokuend-base"
    bin = Path(os.environ.get("DOKUEN_BENCH_BASE", "/nonexistent"))

    def unavailable(self) -> str | None:
        if "DOKUEN_BENCH_BASE" not in os.environ:
            return "set DOKUEN_BENCH_BASE to the bin/ of a virtualenv with the other dokuen"
        return super().unavailable()


class Supervisord(System):
    name = "supervisord"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.conf = work / "supervisord.conf"
        self.socket = work / "supervisor.sock"

    def unavailable(self) -> str | None:
        missing = [n for n in ("supervisord", "supervisorctl") if not (VENV_BIN / n).exists()]
        return f"not installed ({', '.join(missing)} missing)" if missing else None

    def ctl(self, *args: str) -> str:
        return run_cli([str(VENV_BIN / "supervisorctl"), "-c", str(self.conf), *args])

    def prepare(self, procs: list[Proc], grace: int) -> None:
        super().prepare(procs, grace)
        sections = [
            f"[unix_http_server]\nfile={self.socket}\n",
            f"[supervisord]\nnodaemon=true\nlogfile={self.work / 'supervisord.log'}\n"
            f"pidfile={self.work / 'supervisord.pid'}\nchildlogdir={self.work}\n",
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
            f"[supervisorctl]\nserverurl=unix://{self.socket}\n",
        ]
        for proc in procs:
            command = shlex.join(["/bin/sh", "-c", proc.command]).replace("%", "%%")
            # Its best settings for these workloads: RUNNING as soon as spawned (startsecs=0,
            # as dokuend reports "running"), and stop/kill the whole process group.
            lines = [
                f"[program:{proc.name}]",
                f"command={command}",
                f"numprocs={proc.count}",
                "autostart=false",
                "autorestart=true",
                "startsecs=0",
                f"stopwaitsecs={grace}",
                "stopasgroup=true",
                "killasgroup=true",
                "redirect_stderr=true",
                f"stdout_logfile={proc.log or 'NONE'}",
                "stdout_logfile_maxbytes=0",
            ]
            if proc.count > 1:
                lines.append("process_name=%(program_name)s_%(process_num)03d")
            sections.append("\n".join(lines) + "\n")
        self.conf.write_text("\n".join(sections))
        self.main = launch(
            [str(VENV_BIN / "supervisord"), "-c", str(self.conf)],
            output=self.work / "supervisord.out",
        )
        wait_for(lambda: socket_answers(self.socket), 20, "supervisord's socket", 0.01)

    def start(self) -> None:
        self.ctl("start", "all")

    def stop(self) -> None:
        self.ctl("stop", "all")


class Circus(System):
    name = "circus"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.ini = work / "circus.ini"
        self.endpoint = f"ipc://{work / 'ctl.ipc'}"

    def unavailable(self) -> str | None:
        missing = [n for n in ("circusd", "circusctl") if not (VENV_BIN / n).exists()]
        return f"not installed ({', '.join(missing)} missing)" if missing else None

    def ctl(self, *args: str) -> str:
        argv = [str(VENV_BIN / "circusctl"), "--endpoint", self.endpoint, "--timeout", "60"]
        return run_cli([*argv, *args])

    def prepare(self, procs: list[Proc], grace: int) -> None:
        super().prepare(procs, grace)
        sections = [
            f"[circus]\nendpoint = {self.endpoint}\n"
            f"pubsub_endpoint = ipc://{self.work / 'pub.ipc'}\n"
        ]
        for proc in procs:
            # stop_children: its best setting here, signals reach the children too.
            lines = [
                f"[watcher:{proc.name}]",
                f"cmd = {shlex.join(['/bin/sh', '-c', proc.command])}".replace("%", "%%"),
                f"numprocesses = {proc.count}",
                "autostart = false",
                "respawn = true",
                f"graceful_timeout = {grace}",
                "stop_children = true",
                "copy_env = true",
            ]
            if proc.log is not None:
                lines += [
                    "stdout_stream.class = FileStream",
                    f"stdout_stream.filename = {proc.log}",
                ]
            sections.append("\n".join(lines) + "\n")
        self.ini.write_text("\n".join(sections))
        self.main = launch(
            [
                str(VENV_BIN / "circusd"),
                "--log-output",
                str(self.work / "circusd.log"),
                str(self.ini),
            ],
            output=self.work / "circusd.out",
        )
        wait_for((self.work / "ctl.ipc").exists, 20, "circusd's endpoint", 0.01)
        self.ctl("list")

    def start(self) -> None:
        # A bare ``circusctl start`` leaves autostart=false watchers alone: name each one.
        for proc in self.procs:
            self.ctl("start", proc.name, "--waiting")

    def stop(self) -> None:
        for proc in self.procs:
            self.ctl("stop", proc.name, "--waiting")
