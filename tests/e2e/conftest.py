"""End-to-end fixtures: the installed dokuend in a temporary DOKUEN_HOME, driven only through
the installed dokuenctl."""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psutil
import pytest

if TYPE_CHECKING:
    from tests.e2e.sshd import Sshd

BIN = Path(sys.executable).parent
ENVSERVER = Path(__file__).parent / "envserver.py"
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 15.0) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def write_app(directory: Path, procfile: str, files: dict[str, str] | None = None) -> Path:
    """Write an app directory: its Procfile, the test web server ``envserver.py`` (answers
    every GET with its environment as JSON), and any other ``files`` by name."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Procfile").write_text(textwrap.dedent(procfile).lstrip())
    (directory / "envserver.py").write_text(ENVSERVER.read_text())
    for name, content in (files or {}).items():
        (directory / name).write_text(textwrap.dedent(content).lstrip())
    return directory


def get_json(port: int, path: str = "/") -> Any:
    """GET a local port and decode the JSON answer."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


@dataclass
class Dokuen:
    """One dokuend under test and the dokuenctl that talks to it."""

    home: Path
    ports: tuple[int, int]
    extra_env: dict[str, str] = field(default_factory=dict)
    # What runs dokuend, given its path as the last argument: a shell that sets
    # WATCHDOG_PID=$$ and execs it, as systemd would.
    launcher: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    stderr_path: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home.parent),
            "DOKUEN_HOME": str(self.home),
            "DOKUEN_PORT_RANGE": f"{self.ports[0]}-{self.ports[1]}",
            "CANARY_FROM_THE_DAEMON": "must-not-leak",
            "DOKUEN_NGINX": "off",  # tests of nginx turn it on, on a port of their own
            # pytest's temporary directories are private to root: builds and apps run as
            # root here, except in the tests of the build and app users (an open home).
            **({"DOKUEN_BUILD_UIDS": "off", "DOKUEN_APP_UIDS": "off"} if os.geteuid() == 0 else {}),
            **self.extra_env,
        }

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "dokuen.log"

    def start(self) -> None:
        self.stderr_path = self.home.parent / f"dokuend-{time.monotonic_ns()}.stderr"
        self.home.mkdir(parents=True, exist_ok=True)
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [*self.launcher, str(BIN / "dokuend")], env=self.env, stdout=stderr, stderr=stderr
            )
        # A connect is cheap and a dokuenctl costs a Python start: wait for the socket to take
        # connections before asking dokuenctl, as before, whether the daemon answers.
        wait_for(lambda: self._accepts() or self._died(), "dokuend to listen on its socket")
        wait_for(
            lambda: self.ctl("status", check=False).returncode == 0 or self._died(),
            "dokuend to answer on its socket",
        )
        assert self.process.poll() is None, self.daemon_stderr()

    def _accepts(self) -> bool:
        """Whether the control socket takes a connection (from whichever dokuend holds it);
        True too when it cannot be tried from here (a path too long): dokuenctl decides."""
        path = self.env.get("DOKUEN_SOCKET") or str(self.home / "dokuend.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            try:
                client.connect(path)
            except (FileNotFoundError, ConnectionRefusedError):
                return False
            except OSError:
                return True
        return True

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM the daemon and return its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def daemon_stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path else ""

    def ctl(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "dokuenctl"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"dokuenctl {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def ps(self, app: str | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(
            self.ctl("ps", *([app] if app else []), "--json").stdout
        )
        return rows

    def running(self, app: str, count: int) -> list[dict[str, Any]] | None:
        """The app's processes when exactly ``count`` run and none is in another state."""
        rows = self.ps(app)
        if len(rows) == count and all(row["state"] == "running" for row in rows):
            return rows
        return None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def deploy(self, app: str, directory: Path) -> subprocess.CompletedProcess[str]:
        """Create the app if needed and deploy it; fail the test if that fails."""
        result = self.deploy_result(app, directory)
        if result.returncode != 0:
            pytest.fail(f"deploy {app} failed:\n{result.stderr}")
        return result

    def deploy_result(self, app: str, directory: Path) -> subprocess.CompletedProcess[str]:
        if not (self.home / "apps" / app).exists():
            self.ctl("apps:create", app)
        return self.ctl("deploy", app, str(directory), check=False)


def find_nginx_binary() -> str | None:
    """Debian's nginx, wherever it is (not on a non-root PATH)."""
    for path in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if path and os.access(path, os.X_OK):
            return path
    return None


def free_port_block(size: int = 40) -> tuple[int, int]:
    """A block of ports nothing listens on, below the kernel's ephemeral range (a port in it
    may be taken at any moment by some outgoing connection) and away from 5000-5999."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    top = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    for _ in range(100):
        first = random.randrange(10000, top - size)
        listening = {
            c.laddr.port
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr
        }
        if not any(first <= port < first + size for port in listening):
            return first, first + size - 1
    raise RuntimeError("no free block of ports")


def leftover_processes(marker: str) -> list[psutil.Process]:
    """Running processes whose command line contains ``marker``."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if marker in " ".join(process.info["cmdline"] or []):
                found.append(process)
        except psutil.Error:
            continue
    return found


@contextmanager
def running_dokuen(home: Path) -> Iterator[Dokuen]:
    """A dokuend started on ``home`` and a free block of ports, terminated afterwards."""
    daemon = Dokuen(home=home, ports=free_port_block())
    daemon.start()
    try:
        yield daemon
    finally:
        if daemon.process is not None:
            try:
                daemon.terminate(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                raise


@pytest.fixture
def dokuen(tmp_path: Path) -> Iterator[Dokuen]:
    with running_dokuen(tmp_path / "home") as daemon:
        yield daemon


@pytest.fixture
def apps_dir(tmp_path: Path) -> Path:
    return tmp_path / "src"


SSH_KEY = "dev@laptop"


@pytest.fixture
def sshd(dokuen: Dokuen, tmp_path: Path) -> Iterator["Sshd"]:
    """A real sshd on loopback reading the authorized_keys that ``dokuen`` writes, and a
    client key pair (not yet authorized)."""
    from tests.e2e.sshd import keygen, running_sshd  # noqa: PLC0415 (it imports this module)

    with running_sshd(tmp_path / "sshd", dokuen.home / ".ssh" / "authorized_keys") as server:
        keygen(server.client_key)
        yield server


@pytest.fixture
def authorized(dokuen: Dokuen, sshd: "Sshd") -> "Sshd":
    """The server, with the client's key added as an admin key named SSH_KEY."""
    dokuen.ctl("ssh-keys:add", SSH_KEY, f"{sshd.client_key}.pub")
    return sshd
