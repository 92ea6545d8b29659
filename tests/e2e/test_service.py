"""dokuend as a service, end to end: sd_notify to a datagram socket of the test's own (as
systemd's), the restore before READY=1, the service manager's variables kept from every
child, and `dokuenctl service:install` printing and writing (never enabling: this machine's
systemd, if it has one, is not touched)."""

import itertools
import json
import os
import plistlib
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import BIN, Dokuen, free_port_block, wait_for, write_app
from tests.e2e.test_nginx import NGINX, env_via

SERVICE_VARIABLES = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "INVOCATION_ID",
)
DOKUEND = (BIN / "dokuend").resolve()
SYSTEMD_RUNNING = Path("/run/systemd/system").exists()  # sd_booted(3)


class NotifyReceiver:
    """systemd's side of sd_notify: a datagram socket that records each message and when it
    came. It reads all the time: Linux queues only 10 unread datagrams."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind("\0" + address[1:] if address.startswith("@") else address)
        self._socket.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._socket.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
            self.messages.append((time.monotonic(), fields))

    def wait(self, key: str, after: int = 0) -> int:
        """The index of the first message from ``after`` on that has ``key``."""

        def find() -> int | None:
            for index, (_when, fields) in enumerate(self.messages[after:], after):
                if key in fields:
                    return index + 1  # truthy even for the first message
            return None

        return wait_for(find, f"{key} from dokuend") - 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[NotifyReceiver]:
    notify = NotifyReceiver(str(tmp_path / "notify"))
    yield notify
    notify.close()


# systemd sets WATCHDOG_PID to the service's main process: the shell's $$, which exec makes
# dokuend's own pid.
AS_SYSTEMD = ("/bin/sh", "-c", 'export WATCHDOG_PID=$$; exec "$0"')


def service_env(notify: NotifyReceiver) -> dict[str, str]:
    """What systemd gives a Type=notify service (WATCHDOG_PID comes from AS_SYSTEMD), and
    more it would give one it activates with sockets."""
    return {
        "NOTIFY_SOCKET": notify.address,
        "WATCHDOG_USEC": "400000",
        "LISTEN_PID": "1",
        "LISTEN_FDS": "1",
        "LISTEN_FDNAMES": "http",
        "INVOCATION_ID": "0123456789abcdef0123456789abcdef",
    }


def descendants_environments(pid: int) -> dict[str, dict[str, str]]:
    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found[f"{child.pid} {child.name()}"] = child.environ()
        except psutil.Error:
            continue
    return found


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (bin/setup installs it)")
def test_ready_comes_once_every_app_is_back_and_nginx_serves_it(
    tmp_path: Path, apps_dir: Path, receiver: NotifyReceiver
) -> None:
    http_port = free_port_block(1)[0]
    daemon = Dokuen(
        home=tmp_path / "home",
        ports=free_port_block(),
        extra_env={
            "DOKUEN_NGINX": "managed",
            "DOKUEN_HTTP_PORT": str(http_port),
            "DOKUEN_HTTP_ADDR": "127.0.0.1",
        },
    )
    daemon.start()
    try:
        # A web process that takes a second to listen: READY=1 must wait for its health check.
        procfile = "web: sleep 1; exec python3 envserver.py\nworker: exec sleep 1000\n"
        daemon.deploy("blog", write_app(apps_dir / "blog", procfile))
        assert daemon.terminate() == 0

        daemon.extra_env.update(service_env(receiver))
        daemon.launcher = AS_SYSTEMD
        started = time.monotonic()
        daemon.start()
        ready = receiver.wait("READY")
        ready_at, fields = receiver.messages[ready]
        # Everything is back and nginx already points at the web process, at READY=1.
        served = env_via(http_port, "blog.localhost")
        rows = daemon.ps("blog")
        assert [(row["name"], row["state"]) for row in rows] == [
            ("web.1", "running"),
            ("worker.1", "running"),
        ]
        assert served is not None
        assert ready_at - started >= 1.0
        assert fields["STATUS"] == "1 app, 2/2 processes running"

        status = json.loads(daemon.ctl("status", "--json").stdout)
        assert status["service"] == {"manager": "systemd", "notify": True, "watchdog": 0.2}
        assert "service    systemd (sd_notify, watchdog pings every 0.2s)" in (
            daemon.ctl("status").stdout
        )

        # None of the service manager's variables reaches an app, nginx, or any other child.
        assert served["DYNO"] == "web.1"
        assert not set(SERVICE_VARIABLES) & set(served)
        assert daemon.process is not None
        children = descendants_environments(daemon.process.pid)
        assert any("nginx" in name for name in children)
        leaked = {name: set(SERVICE_VARIABLES) & set(env) for name, env in children.items()}
        assert all(not names for names in leaked.values()), leaked
        assert daemon.terminate() == 0
    finally:
        if daemon.process is not None:
            daemon.process.kill()
            daemon.process.wait()


def test_watchdog_reload_and_stop_are_notified(tmp_path: Path) -> None:
    # An abstract socket this time, as systemd's own is.
    receiver = NotifyReceiver(f"@dokuen-test-{os.getpid()}-{time.monotonic_ns()}")
    daemon = Dokuen(home=tmp_path / "home", ports=free_port_block(), launcher=AS_SYSTEMD)
    daemon.extra_env.update(service_env(receiver))
    try:
        daemon.start()
        ready = receiver.wait("READY")
        assert receiver.messages[ready][1]["STATUS"] == "0 apps, 0/0 processes running"

        # WATCHDOG_USEC=400000: a ping every 0.2 s, from the event loop.
        first = receiver.wait("WATCHDOG", ready)
        time.sleep(1.5)
        pings = [when for when, fields in receiver.messages[first:] if "WATCHDOG" in fields]
        assert 4 <= len(pings) <= 12, pings
        assert all(0.05 < b - a < 1.0 for a, b in itertools.pairwise(pings))

        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        reloading = receiver.wait("RELOADING")
        assert receiver.messages[reloading][1]["MONOTONIC_USEC"].isdigit()
        receiver.wait("READY", reloading)

        assert daemon.terminate() == 0
        stopping = receiver.wait("STOPPING")
        assert receiver.messages[stopping][1]["STATUS"] == "stopping every app"
    finally:
        receiver.close()
        if daemon.process is not None:
            daemon.process.kill()
            daemon.process.wait()


def test_started_by_hand_status_says_so(dokuen: Dokuen) -> None:
    status = json.loads(dokuen.ctl("status", "--json").stdout)
    assert status["service"] == {"manager": "none", "notify": False, "watchdog": None}
    assert "service    none (started by hand)" in dokuen.ctl("status").stdout


# -- dokuenctl service:install ---------------------------------------------------------


def ctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dokuenctl"), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env or {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root"},
        timeout=60,
    )


def test_install_print_systemd() -> None:
    result = ctl("service:install", "--systemd", "--print")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "Type=notify" in lines
    assert f"ExecStart={DOKUEND}" in lines
    assert "StateDirectory=dokuen" in lines
    assert not any(line.startswith(("User=", "Group=")) for line in lines)  # root
    assert "Delegate=yes" in lines
    user = ctl("service:install", "--systemd", "--user", "--print").stdout.splitlines()
    assert f"ExecStart={DOKUEND}" in user
    assert "WantedBy=default.target" in user
    assert not any(line.startswith(("User=", "StateDirectory=")) for line in user)


def test_install_print_launchd() -> None:
    result = ctl("service:install", "--launchd", "--print")
    assert result.returncode == 0, result.stderr
    plist = plistlib.loads(result.stdout.encode())
    assert plist["Label"] == "com.dokuen.dokuend"
    assert plist["ProgramArguments"] == [str(DOKUEND)]
    assert plist["EnvironmentVariables"]["DOKUEN_HOME"] == "/var/lib/dokuen"
    agent = plistlib.loads(ctl("service:install", "--launchd", "--user", "--print").stdout.encode())
    assert agent["StandardErrorPath"] == "/root/Library/Logs/dokuend.log"


@pytest.mark.skipif(
    SYSTEMD_RUNNING or shutil.which("systemctl") is None,
    reason="needs systemctl on a machine whose PID 1 is not systemd (nothing may be enabled)",
)
def test_install_writes_the_unit_then_says_systemd_is_not_running(tmp_path: Path) -> None:
    units = tmp_path / "units"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DOKUEN_HOME": str(tmp_path / "state"),
    }
    printed = ctl("service:install", "--systemd", "--user", "--print", env=env).stdout
    result = ctl("service:install", "--systemd", "--user", "--unit-dir", str(units), env=env)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"wrote {units / 'dokuend.service'}"]
    error = result.stderr.strip()
    assert error.startswith("error: systemctl --user daemon-reload failed (exit 1): ")
    assert error.endswith("(systemd is not running on this machine)")
    assert (units / "dokuend.service").read_text() == printed

    # Removing it works without systemd: what systemctl cannot do is a warning.
    (tmp_path / "state").mkdir()
    result = ctl("service:uninstall", "--systemd", "--user", "--unit-dir", str(units), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("warning: systemctl --user disable --now dokuend.service")
    assert f"removed {units / 'dokuend.service'}" in result.stdout.splitlines()
    assert f"the state in {tmp_path / 'state'} is kept" in result.stdout
    assert not (units / "dokuend.service").exists()
    assert (tmp_path / "state").is_dir()


@pytest.mark.skipif(
    SYSTEMD_RUNNING or shutil.which("systemctl") is None or os.geteuid() != 0,
    reason="needs root and systemctl on a machine whose PID 1 is not systemd",
)
def test_the_system_unit_makes_no_user_when_systemd_cannot_take_it(tmp_path: Path) -> None:
    try:
        pwd.getpwnam("dokuen")
        pytest.skip("this machine already has a dokuen user")
    except KeyError:
        pass
    result = ctl("service:install", "--systemd", "--unit-dir", str(tmp_path))
    assert result.returncode == 1
    assert "systemctl daemon-reload failed" in result.stderr
    assert (tmp_path / "dokuend.service").exists()
    with pytest.raises(KeyError):
        pwd.getpwnam("dokuen")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_only_root_installs_the_system_service(tmp_path: Path) -> None:
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = subprocess.run(
        [*nobody, str(BIN / "dokuenctl"), "service:install", "--systemd"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "error: only root can install the system service: run it with sudo, "
        "or use --user for a service of your own\n"
    )
