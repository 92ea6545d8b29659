"""Benchmark dokuend against honcho, supervisord, circus and a plain ``subprocess.Popen`` script.

Run it from the repository root::

    python bench/run.py            # the full run (about 7.5 minutes on 2 cores)
    python bench/run.py --quick    # small sizes, a smoke run
    python bench/run.py --only supervisord --workload 1

The first start creates ``bench/.venv``, installs psutil and the peers (honcho, supervisor,
circus) there from PyPI, and re-runs itself with that interpreter; a peer that does not
install is reported and skipped. dokuend and dokuenctl come from the project's ``.venv``.
Every workload starts a fresh daemon in a temporary directory and stops it by PID when it
is done. The table goes to stdout and, as JSON, to ``bench/results/latest.json``.
docs/benchmarks.md describes the workloads and the targets.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any, ClassVar

try:
    import psutil
except ModuleNotFoundError:  # started outside bench/.venv: bootstrap() re-execs in there
    psutil = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "bench" / ".venv"
VENV_BIN = VENV / "bin"
DOKUEN_BIN = ROOT / ".venv" / "bin"
RESULTS = ROOT / "bench" / "results" / "latest.json"
SYSTEMS = ("dokuend", "honcho", "supervisord", "circus", "plain")
PEERS = ("honcho", "supervisord", "circus")
PIP_PACKAGES = {"honcho": "honcho", "supervisord": "supervisor", "circus": "circus"}
DOKUEN_APP = "bench"
DOKUEN_MAX_SCALE = 500  # dokuend's ps:scale limit per type: a bigger count becomes more types


class BenchError(Exception):
    """A step of a workload failed; the workload is skipped for that system."""


# -- bootstrap ---------------------------------------------------------------------------


def bootstrap(only: str | None) -> None:
    """Make bench/.venv, install psutil and the peers there, and re-exec with its Python.

    Returns (without doing anything) when already running inside bench/.venv.
    """
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV_BIN / "python"
    if not python.exists():
        print(f"creating {VENV.relative_to(ROOT)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    packages = ["psutil"] + [PIP_PACKAGES[name] for name in PEERS if only is None or only == name]
    for package in packages:
        print(f"pip install {package} (into {VENV.relative_to(ROOT)})", flush=True)
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", package],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "WARNING" not in line]
            print(f"  could not install {package}: " + "\n  ".join(errors[-8:]), flush=True)
            if package == "psutil":
                sys.exit("psutil is needed to measure anything; giving up")
    script = str(Path(__file__).resolve())
    os.execv(str(python), [str(python), script, *sys.argv[1:]])


# -- processes ---------------------------------------------------------------------------

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


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.01) -> None:
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


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


# -- the systems -------------------------------------------------------------------------


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

    def _terminate_main(self) -> None:
        """Stop for honcho and the plain script: SIGTERM, then wait for it to exit."""
        if self.main is None:
            return
        self.main.send_signal(signal.SIGTERM)
        try:
            self.main.wait(self.grace + 8)
        except subprocess.TimeoutExpired:
            self.stop_timed_out = True


class Dokuend(System):
    name = "dokuend"
    _SOURCE = re.compile(rb"\S+ " + DOKUEN_APP.encode() + rb"\[p(\d\d)\.1\]: ")

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.home = work / "home"
        self.socket = self.home / "dokuend.sock"
        self.env = BASE_ENV | {
            "DOKUEN_HOME": str(self.home),
            "DOKUEN_PORT_RANGE": free_port_range(),
            "DOKUEN_LOG_MAX_BYTES": "2000000000",
        }

    def unavailable(self) -> str | None:
        missing = [n for n in ("dokuend", "dokuenctl") if not (DOKUEN_BIN / n).exists()]
        return f"{', '.join(missing)} not in {DOKUEN_BIN}" if missing else None

    def ctl(self, *args: str) -> str:
        return run_cli([str(DOKUEN_BIN / "dokuenctl"), *args], self.env)

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

    def prepare(self, procs: list[Proc], grace: int) -> None:
        super().prepare(procs, grace)
        self.main = launch(
            [str(DOKUEN_BIN / "dokuend")], env=self.env, output=self.work / "dokuend.err"
        )
        wait_for(lambda: socket_answers(self.socket), 20, "dokuend's control socket")
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
        wait_for(lambda: socket_answers(self.socket), 20, "supervisord's socket")

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
        wait_for((self.work / "ctl.ipc").exists, 20, "circusd's endpoint")
        self.ctl("list")

    def start(self) -> None:
        # A bare ``circusctl start`` leaves autostart=false watchers alone: name each one.
        for proc in self.procs:
            self.ctl("start", proc.name, "--waiting")

    def stop(self) -> None:
        for proc in self.procs:
            self.ctl("stop", proc.name, "--waiting")


class Honcho(System):
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

    def stop(self) -> None:
        self._terminate_main()

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


class Plain(System):
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

    def stop(self) -> None:
        self._terminate_main()


SYSTEM_TYPES: dict[str, type[System]] = {
    cls.name: cls for cls in (Dokuend, Honcho, Supervisord, Circus, Plain)
}


# -- workloads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    printers: int = 16
    lines: int = 50_000
    spawn: int = 200
    idle: int = 100
    idle_seconds: float = 20.0
    kills: int = 20
    stubborn: int = 10
    grace: int = 2
    log_timeout: float = 150.0


FULL = Sizes()
QUICK = Sizes(
    printers=4,
    lines=5_000,
    spawn=20,
    idle=10,
    idle_seconds=3.0,
    kills=5,
    stubborn=4,
    log_timeout=30.0,
)

Metrics = dict[str, float | int | None]

PRINTER_SCRIPT = """\
import os, sys, time

ident, count, gate = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
open(os.path.join(gate, "ready.%d" % ident), "w").close()
go = os.path.join(gate, "go")
while not os.path.exists(go):
    time.sleep(0.002)
pad = b"x" * 85
fd = sys.stdout.fileno()
# One write per line, as a logger that flushes every record does (or PYTHONUNBUFFERED=1).
for seq in range(count):
    os.write(fd, b"#P%02d S%07d %s\\n" % (ident, seq, pad))  # 100 bytes with the newline
os.write(fd, b"#P%02d DONE\\n" % ident)
open(os.path.join(gate, "done.%d" % ident), "w").close()
while True:  # stay up: an exit would be restarted (or, under honcho, stop everything)
    time.sleep(3600)
"""
PAYLOAD = re.compile(rb"#P(\d\d) (?:S(\d{7}) x{85}|DONE)")


class DoneCounter:
    """Reads the logs as they grow and counts the printers' final ``DONE`` lines."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.files: dict[Path, IO[bytes]] = {}
        self.carry = dict.fromkeys(paths, b"")
        self.done = 0

    def poll(self) -> int:
        for path in self.paths:
            file = self.files.get(path)
            if file is None:
                try:
                    file = self.files[path] = path.open("rb")
                except FileNotFoundError:
                    continue
            data = self.carry[path] + file.read()
            cut = data.rfind(b"\n") + 1
            self.done += data[:cut].count(b" DONE\n")
            self.carry[path] = data[cut:]
        return self.done

    def close(self) -> None:
        for file in self.files.values():
            file.close()


@dataclass
class LineCheck:
    received: int = 0
    lost: int = 0
    malformed: int = 0  # split, merged or cut lines, or a line under the wrong process
    out_of_order: int = 0
    duplicated: int = 0


def check_lines(system: System, printers: int, lines: int) -> LineCheck:
    """Every printer's lines, each whole, once, in order, under the right process?"""
    result = LineCheck()
    got = {ident: bytearray(lines) for ident in range(1, printers + 1)}
    highest = dict.fromkeys(got, -1)
    for path in system.log_files():
        if not path.exists():
            continue
        with path.open("rb") as file:
            for raw in file:
                line = raw.rstrip(b"\n")
                start = line.find(b"#P")
                if start < 0:
                    if b"xxxx" in line:  # a piece of a printer's line, cut off its start
                        result.malformed += 1
                    continue
                match = PAYLOAD.fullmatch(line, start)
                ident = int(match[1]) if match else 0
                if match is None or ident not in got:
                    result.malformed += 1
                    continue
                if system.source_of(path, line[:start]) != ident:
                    result.malformed += 1
                    continue
                if match[2] is None:  # DONE
                    continue
                seq = int(match[2])
                if seq >= lines:
                    result.malformed += 1
                    continue
                result.received += 1
                if got[ident][seq]:
                    result.duplicated += 1
                got[ident][seq] = 1
                if seq < highest[ident]:
                    result.out_of_order += 1
                highest[ident] = max(highest[ident], seq)
    result.lost = sum(lines - sum(seen) for seen in got.values())
    return result


def log_throughput(system: System, sizes: Sizes) -> Metrics:
    """Workload 1: printers write as fast as they can; time until every line is logged."""
    gate = system.work / "gate"
    gate.mkdir()
    logs = system.work / "logs"
    logs.mkdir()
    printer = system.work / "printer.py"
    printer.write_text(PRINTER_SCRIPT)
    procs = [
        Proc(
            f"p{i:02d}",
            f"exec {sys.executable} {printer} {i} {sizes.lines} {gate}",
            log=logs / f"p{i:02d}.log",
        )
        for i in range(1, sizes.printers + 1)
    ]
    system.prepare(procs, sizes.grace)
    for stale in gate.iterdir():  # printers that dokuend's deploy started and stopped
        stale.unlink()
    system.start()
    wait_for(lambda: len(list(gate.glob("ready.*"))) >= sizes.printers, 60, "printers to be ready")
    counter = DoneCounter(system.log_files())
    supervisor = system.supervisor()
    cpu_before = cpu_seconds(supervisor)
    started = time.perf_counter()
    (gate / "go").touch()
    timed_out = False
    while counter.poll() < sizes.printers:
        if time.perf_counter() - started > sizes.log_timeout:
            timed_out = True
            break
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    counter.close()
    cpu = cpu_seconds(supervisor) - cpu_before
    (gate / "go").unlink()  # a printer that a daemon restarts while stopping stays quiet
    check = check_lines(system, sizes.printers, sizes.lines)
    if timed_out:
        print(f"    not every line was logged within {sizes.log_timeout:g}s")
    return {
        "w1_lines_per_s": check.received / elapsed,
        "w1_seconds": None if timed_out else elapsed,
        "w1_lost": check.lost,
        "w1_malformed": check.malformed,
        "w1_out_of_order": check.out_of_order,
        "w1_duplicated": check.duplicated,
        "w1_cpu_s": cpu,
    }


def printer_ceiling(sizes: Sizes, work: Path) -> float:
    """The load generator's own rate: the printers writing to /dev/null, no supervisor.
    No system can log faster than this."""
    gate = work / "gate"
    gate.mkdir(parents=True)
    printer = work / "printer.py"
    printer.write_text(PRINTER_SCRIPT)
    printers = [
        subprocess.Popen(
            [sys.executable, str(printer), str(i), str(sizes.lines), str(gate)],
            stdout=subprocess.DEVNULL,
            env=BASE_ENV,
            start_new_session=True,
        )
        for i in range(1, sizes.printers + 1)
    ]
    try:
        wait_for(lambda: len(list(gate.glob("ready.*"))) >= sizes.printers, 60, "printers")
        started = time.perf_counter()
        (gate / "go").touch()
        wait_for(lambda: len(list(gate.glob("done.*"))) >= sizes.printers, 60, "printers", 0.005)
        return sizes.printers * sizes.lines / (time.perf_counter() - started)
    finally:
        for process in printers:
            process.kill()
            process.wait()


def count_named(system: System, name: str) -> int:
    if system.main is None:
        return 0
    count = 0
    for process in descendants(system.main.pid):
        with contextlib.suppress(psutil.Error):
            if process.name() == name and process.status() != psutil.STATUS_ZOMBIE:
                count += 1
    return count


def wait_until_up(
    system: System, slots: int, sleeps: int | None = None, timeout: float = 120
) -> None:
    """Until ``sleeps`` (default ``slots``) sleep processes run under the system and, where
    the system says, it counts ``slots`` processes running."""
    wanted = slots if sleeps is None else sleeps

    def up() -> bool:
        if count_named(system, "sleep") < wanted:
            return False
        by_status = system.running_by_status()
        return by_status is None or by_status >= slots

    wait_for(up, timeout, f"{wanted} sleep processes under {system.name}", interval=0.02)


def spawn_and_stop(system: System, sizes: Sizes) -> Metrics:
    """Workload 2: time to start ``spawn`` sleeps from nothing, then to stop them all."""
    system.prepare([Proc("s", "exec sleep 1000", sizes.spawn)], 10)
    started = time.perf_counter()
    system.start()
    wait_until_up(system, sizes.spawn)
    up = time.perf_counter() - started
    sleeps = [p for p in system.workload() if p.name() == "sleep"]
    started = time.perf_counter()
    system.stop()
    command = time.perf_counter() - started
    wait_for(lambda: not any(alive(p) for p in sleeps), 60, "the sleeps to end", 0.005)
    gone = time.perf_counter() - started
    return {"w2_up_s": up, "w2_stop_s": command, "w2_gone_s": gone}


def idle_cost(system: System, sizes: Sizes) -> Metrics:
    """Workload 3: the supervisor's memory and CPU while ``idle`` sleeps do nothing."""
    system.prepare([Proc("idle", "exec sleep 1000", sizes.idle)], 10)
    system.start()
    wait_until_up(system, sizes.idle)
    time.sleep(2)  # let start-up work settle
    supervisor = system.supervisor()
    before = cpu_seconds(supervisor)
    time.sleep(sizes.idle_seconds)
    cpu = cpu_seconds(supervisor) - before
    rss = pss = 0
    for process in supervisor:
        with contextlib.suppress(psutil.Error):
            memory = process.memory_full_info()
            rss += memory.rss
            pss += memory.pss
    system.stop()
    return {
        "w3_rss_mib": rss / 2**20,
        "w3_pss_mib": pss / 2**20,
        "w3_cpu_s": cpu,
        "w3_helpers": len(supervisor) - 1,
    }


def find_sleep(system: System, seconds: int) -> psutil.Process | None:
    for process in system.workload():
        with contextlib.suppress(psutil.Error):
            if process.cmdline() == ["sleep", str(seconds)]:
                return process
    return None


def restart_latency(system: System, sizes: Sizes) -> Metrics:
    """Workload 4: kill -9 each of ``kills`` processes once; time until its replacement runs."""
    if not system.restarts:
        return {"w4_restart_median_ms": None, "w4_restart_max_ms": None}
    base = 100_000
    procs = [Proc(f"k{i:02d}", f"exec sleep {base + i}") for i in range(1, sizes.kills + 1)]
    system.prepare(procs, 10)
    system.start()
    wait_until_up(system, sizes.kills, timeout=60)
    time.sleep(1.5)  # every process has been up for over a second: a restart is no crash loop
    latencies: list[float] = []
    missed = 0
    for i in range(1, sizes.kills + 1):
        marker = f"sleep {base + i}"
        victim = find_sleep(system, base + i)
        if victim is None:
            raise BenchError(f"no process runs {marker!r}")
        known = set(psutil.pids())
        started = time.perf_counter()
        victim.kill()
        replacement = None
        while replacement is None and time.perf_counter() - started < 10:
            time.sleep(0.005)
            for pid in psutil.pids():
                if pid in known:
                    continue
                with contextlib.suppress(psutil.Error):
                    if marker in " ".join(psutil.Process(pid).cmdline()):
                        replacement = pid
                        break
        if replacement is None:
            missed += 1
        else:
            latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.1)
    return {
        "w4_restart_median_ms": statistics.median(latencies) if latencies else None,
        "w4_restart_max_ms": max(latencies) if latencies else None,
        "w4_missed": missed,
    }


STUBBORN = {
    "w5a": "trap '' TERM; sleep 1000 & sleep 1000",
    "w5b": "trap '' TERM; setsid sleep 1000 & sleep 1000",
}


def stubborn_stop(system: System, sizes: Sizes, variant: str) -> Metrics:
    """Workload 5: stop processes that ignore SIGTERM and have a grandchild (in the group,
    or gone to its own session with setsid) with a grace period; count what survives."""
    system.prepare([Proc("t", STUBBORN[variant], sizes.stubborn)], sizes.grace)
    system.start()
    wait_until_up(system, sizes.stubborn, 2 * sizes.stubborn, 60)
    time.sleep(0.3)
    tree = system.workload()  # the shells, their background sleeps and their own sleeps
    shells = [p for p in tree if p.name() == "sh"]
    started = time.perf_counter()
    system.stop()
    timeout = sizes.grace + 8
    with contextlib.suppress(BenchError):
        wait_for(lambda: not any(alive(p) for p in shells), timeout, "the shells", 0.005)
    elapsed = time.perf_counter() - started
    hung = system.stop_timed_out or any(alive(p) for p in shells)
    time.sleep(0.5)
    left = [p for p in tree if alive(p)]
    kill_processes(left)
    if hung:
        print(f"    {system.name} had not stopped {timeout:g}s after being asked to")
    return {
        f"{variant}_stop_s": None if hung else elapsed,
        f"{variant}_hung": int(hung),
        f"{variant}_left": len(left),
        f"{variant}_tree": len(tree),
    }


@dataclass(frozen=True)
class Workload:
    number: str
    title: str
    run: Callable[[System, Sizes], Metrics]
    repeat: bool = False  # short and noisy: run up to REPEATS times, report the median


REPEATS = 3
REPEAT_BUDGET = 30.0  # seconds per system and workload; a slow system gets fewer runs
WORST_OF = ("lost", "malformed", "out_of_order", "duplicated", "missed", "left", "hung")

WORKLOADS = [
    Workload("1", "log throughput", log_throughput, repeat=True),
    Workload("2", "spawn and stop", spawn_and_stop, repeat=True),
    Workload("3", "idle cost", idle_cost),
    Workload("4", "restart after kill -9", restart_latency),
    Workload("5a", "stop, grandchild in group", lambda s, z: stubborn_stop(s, z, "w5a")),
    Workload("5b", "stop, grandchild setsid", lambda s, z: stubborn_stop(s, z, "w5b")),
]


# -- report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool = False
    decimals: int = 3


METRICS = [
    Metric("w1_lines_per_s", "1 log lines/s", "lines/s", True, 0),
    Metric("w1_seconds", "1 all lines logged", "s"),
    Metric("w1_lost", "1 lines lost", "lines", decimals=0),
    Metric("w1_malformed", "1 lines split/malformed", "lines", decimals=0),
    Metric("w1_out_of_order", "1 lines out of order", "lines", decimals=0),
    Metric("w1_cpu_s", "1 supervisor CPU", "s", decimals=2),
    Metric("w2_up_s", "2 all running", "s"),
    Metric("w2_stop_s", "2 stop command", "s"),
    Metric("w2_gone_s", "2 all gone", "s"),
    Metric("w3_rss_mib", "3 supervisor RSS", "MiB", decimals=1),
    Metric("w3_pss_mib", "3 supervisor PSS", "MiB", decimals=1),
    Metric("w3_cpu_s", "3 idle CPU", "s", decimals=3),
    Metric("w4_restart_median_ms", "4 restart median", "ms", decimals=1),
    Metric("w4_restart_max_ms", "4 restart max", "ms", decimals=1),
    Metric("w5a_stop_s", "5a stop (in-group)", "s"),
    Metric("w5a_left", "5a left alive", "procs", decimals=0),
    Metric("w5b_stop_s", "5b stop (setsid)", "s"),
    Metric("w5b_left", "5b left alive", "procs", decimals=0),
]


def shown(value: float | int | None, metric: Metric) -> str:
    if value is None:
        return "n/a"
    if metric.decimals == 0:
        return f"{round(value):,}"
    return f"{value:.{metric.decimals}f}"


def shown_for(metrics: Metrics, metric: Metric) -> str:
    hung = metrics.get(metric.key.replace("_stop_s", "_hung"))
    if metric.key.endswith("_stop_s") and hung:
        return "hung"
    return shown(metrics.get(metric.key), metric)


def advantage(ours: float | int | None, theirs: float | int | None, metric: Metric) -> str:
    """How many times better dokuend is (above 1) or worse (below 1)."""
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return "-"
    factor = ours / theirs if metric.higher_is_better else theirs / ours
    return f"{factor:.2f}x"


def table(results: dict[str, Metrics], systems: list[str]) -> str:
    peers = [name for name in systems if name != "dokuend"] if "dokuend" in systems else []
    headers = ["metric", "unit", *systems, *(f"vs {p}" for p in peers)]
    rows = []
    for metric in METRICS:
        if not any(metric.key in results.get(name, {}) for name in systems):
            continue
        values = [shown_for(results.get(n, {}), metric) for n in systems]
        ours = results.get("dokuend", {}).get(metric.key)
        ratios = [advantage(ours, results.get(p, {}).get(metric.key), metric) for p in peers]
        rows.append([metric.label, metric.unit, *values, *ratios])
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, ["-" * w for w in widths], *rows]:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


@dataclass
class Target:
    number: str
    text: str
    passed: bool | None  # None: not measured in this run
    detail: str


def targets(results: dict[str, Metrics], sizes: Sizes) -> list[Target]:
    """The goals in docs/benchmarks.md, judged on this run's figures."""

    def get(system: str, key: str) -> float | None:
        value = results.get(system, {}).get(key)
        return None if value is None else float(value)

    def fmt(value: float | None, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:,.{digits}f}"

    found = []
    rate = get("dokuend", "w1_lines_per_s")
    peers = {name: get(name, "w1_lines_per_s") for name in ("supervisord", "circus")}
    faults = [get("dokuend", f"w1_{k}") for k in ("lost", "malformed", "out_of_order")]
    passed = None
    if rate is not None and None not in peers.values():
        passed = all(rate >= 2 * (v or 0) for v in peers.values()) and faults == [0, 0, 0]
    found.append(
        Target(
            "1",
            "log lines/s at least 2x supervisord's and circus's; no line lost, split, reordered",
            passed,
            f"dokuend {fmt(rate, 0)} lines/s; "
            + ", ".join(
                f"{n} {fmt(v, 0)} (2x = {fmt(2 * v if v else None, 0)})" for n, v in peers.items()
            )
            + f"; lost/malformed/out of order {[fmt(f, 0) for f in faults]}",
        )
    )
    up, plain, stop = (
        get(n, k)
        for n, k in [("dokuend", "w2_up_s"), ("plain", "w2_up_s"), ("dokuend", "w2_stop_s")]
    )
    passed = None
    if up is not None and plain is not None and stop is not None:
        passed = up <= 3 * plain and stop < 0.3
    found.append(
        Target(
            "2",
            f"{sizes.spawn} processes up within 3x the plain script's time; stopped in under 0.3 s",
            passed,
            f"up {fmt(up)} s (plain {fmt(plain)} s, limit {fmt(3 * plain if plain else None)} s);"
            f" dokuenctl stop {fmt(stop)} s",
        )
    )
    rss, cpu, peer_cpu = (
        get(n, k)
        for n, k in [
            ("dokuend", "w3_rss_mib"),
            ("dokuend", "w3_cpu_s"),
            ("supervisord", "w3_cpu_s"),
        ]
    )
    passed = None
    if rss is not None and cpu is not None and peer_cpu is not None:
        passed = rss < 40 and cpu <= peer_cpu
    found.append(
        Target(
            "3",
            "under 40 MiB RSS; no more idle CPU than supervisord",
            passed,
            f"RSS {fmt(rss, 1)} MiB; idle CPU {fmt(cpu, 2)} s vs supervisord {fmt(peer_cpu, 2)} s"
            f" over {sizes.idle_seconds:g} s",
        )
    )
    median, missed = get("dokuend", "w4_restart_median_ms"), get("dokuend", "w4_missed")
    passed = None if median is None else median < 100 and not missed
    found.append(
        Target(
            "4",
            "restart after kill -9: median under 100 ms",
            passed,
            f"median {fmt(median, 1)} ms, max {fmt(get('dokuend', 'w4_restart_max_ms'), 1)} ms",
        )
    )
    limit = sizes.grace + 0.5
    checks = {
        v: (get("dokuend", f"w{v}_stop_s"), get("dokuend", f"w{v}_left")) for v in ("5a", "5b")
    }
    passed = None
    if all(left is not None for _stop, left in checks.values()):
        passed = all(s is not None and s <= limit and left == 0 for s, left in checks.values())
    found.append(
        Target(
            "5",
            f"stubborn processes: none left; stopped within grace + 0.5 s ({limit:g} s)",
            passed,
            "; ".join(f"{v}: stop {fmt(s)} s, left {fmt(n, 0)}" for v, (s, n) in checks.items()),
        )
    )
    return found


# -- main --------------------------------------------------------------------------------


def versions() -> dict[str, str]:

    found = {"python": platform.python_version()}
    for package in ("honcho", "supervisor", "circus", "psutil"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    with contextlib.suppress(OSError, BenchError):
        found["dokuen"] = run_cli([str(DOKUEN_BIN / "dokuend"), "--version"]).split()[-1]
    return found


def source_state() -> dict[str, Any]:
    """Which dokuend was measured: the commit, and the files under supervisor/ that differ
    from it (dokuend is installed editable, so the working tree is what runs)."""
    state: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "--no-optional-locks", "-C", str(ROOT)]  # read only: no index refresh
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True
        )
        state["commit"] = head.stdout.strip()
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", "supervisor"],
            check=True,
            capture_output=True,
            text=True,
        )
        state["changed"] = [line[3:] for line in status.stdout.splitlines()]
    return state


def dokuenctl_startup() -> float | None:
    """Median wall time of ``dokuenctl --version``: the part of every dokuenctl command's
    time that is Python starting and importing, before it talks to the daemon."""
    if not (DOKUEN_BIN / "dokuenctl").exists():
        return None
    times = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(
            [str(DOKUEN_BIN / "dokuenctl"), "--version"], capture_output=True, check=False
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", choices=SYSTEMS, help="run one system only")
    parser.add_argument(
        "--workload",
        action="append",
        choices=[w.number for w in WORKLOADS],
        help="run only this workload (repeatable)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    return parser.parse_args()


@dataclass
class Run:
    sizes: Sizes
    systems: list[str]
    results: dict[str, Metrics] = field(default_factory=dict)
    runs: dict[str, dict[str, list[Metrics]]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def note(self, system: str, text: str) -> None:
        self.notes.setdefault(system, []).append(text)
        print(f"    {system}: {text}", flush=True)


def combine(runs: list[Metrics]) -> Metrics:
    """One figure per metric over repeated runs: the worst count of faults, else the median
    (None, a run that did not finish, counts as the worst)."""
    combined: Metrics = {}
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        if key.endswith(WORST_OF):
            combined[key] = max(v or 0 for v in values)
        elif any(v is None for v in values):
            combined[key] = None
        else:
            combined[key] = statistics.median(v for v in values if v is not None)
    return combined


def run_once(run: Run, workload: Workload, name: str, work: Path, keep: bool) -> Metrics | None:
    system = SYSTEM_TYPES[name](work)
    work.mkdir()
    try:
        return workload.run(system, run.sizes)
    except (BenchError, OSError, psutil.Error, subprocess.SubprocessError) as exc:
        run.note(name, f"workload {workload.number} failed: {exc}")
        return None
    finally:
        system.shutdown()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def run_workloads(run: Run, chosen: list[Workload], base: Path, keep: bool) -> None:
    for workload in chosen:
        print(f"workload {workload.number}: {workload.title}", flush=True)
        for name in run.systems:
            started = time.perf_counter()
            runs: list[Metrics] = []
            while len(runs) < (REPEATS if workload.repeat else 1):
                work = base / f"w{workload.number}-{name}-{len(runs) + 1}"
                metrics = run_once(run, workload, name, work, keep)
                if metrics is None:
                    break
                runs.append(metrics)
                if time.perf_counter() - started > REPEAT_BUDGET:
                    break
            if not runs:
                continue
            combined = combine(runs)
            run.results.setdefault(name, {}).update(combined)
            run.runs.setdefault(name, {})[workload.number] = runs
            summary = ", ".join(
                f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                for key, value in combined.items()
            )
            took = time.perf_counter() - started
            print(f"  {name:<12} {took:5.1f}s  {len(runs)} run(s)  {summary}", flush=True)


def exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # through the finally blocks that stop what was started


def main() -> None:
    args = parse_args()
    bootstrap(args.only)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    sizes = QUICK if args.quick else FULL
    wanted = [args.only] if args.only else list(SYSTEMS)
    run = Run(sizes, [])
    for name in wanted:
        reason = SYSTEM_TYPES[name](Path()).unavailable()
        if reason:
            run.note(name, f"skipped: {reason}")
        else:
            run.systems.append(name)
    chosen = [w for w in WORKLOADS if not args.workload or w.number in args.workload]
    base = Path(tempfile.mkdtemp(prefix="dokuen-bench-"))
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"note: load average {load_before[0]:.2f} before the run: figures may be noisy")
    ceiling = None
    if any(w.number == "1" for w in chosen):
        rates = [printer_ceiling(sizes, base / f"ceiling-{n}") for n in range(REPEATS)]
        ceiling = statistics.median(rates)
        print(f"printers writing to /dev/null (no supervisor): {ceiling:,.0f} lines/s")
    began = time.perf_counter()
    try:
        run_workloads(run, chosen, base, args.keep)
    finally:
        for process in LAUNCHED:  # only after an interruption is anything still running
            if process.poll() is None:
                tree = descendants(process.pid)
                process.kill()
                process.wait()
                kill_processes(tree)
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    found = targets(run.results, sizes)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/run.py" + (" --quick" if args.quick else ""),
        "machine": {
            "nproc": os.cpu_count(),
            "platform": platform.platform(),
            "versions": versions(),
            "dokuenctl_startup_s": dokuenctl_startup(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "dokuen_source": source_state(),
        "printer_ceiling_lines_per_s": ceiling,
        "sizes": asdict(sizes),
        "duration_s": round(time.perf_counter() - began, 1),
        "results": run.results,
        "runs": run.runs,
        "notes": run.notes,
        "targets": [asdict(t) for t in found],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(run.results, run.systems))
    print("\n(vs PEER: how many times better dokuend is; below 1.00x it is worse)")
    if ceiling is not None:
        print(f"printers alone, writing to /dev/null: {ceiling:,.0f} lines/s")
    print("\ntargets:")
    for target in found:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[target.passed]
        print(f"  {verdict} {target.number}. {target.text}\n         {target.detail}")
    print(f"\nwrote {RESULTS.relative_to(ROOT)} ({report['duration_s']} s)")


if __name__ == "__main__":
    main()
