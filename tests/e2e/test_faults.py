"""Nothing fatal from one bad thing: a bad file of one app, a full disk, too many open files,
a closed stderr, deleted directories. The daemon goes on and what served keeps serving."""

import json
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import BIN, Dokuen, free_port_block, get_json, wait_for, write_app
from tests.e2e.test_nginx import NGINX, env_via, http_port, nginx_dokuen
from tests.e2e.test_one_daemon import assert_one_line_error

WEB = "web: python3 envserver.py\n"
TALKER = "talker: while :; do echo hello; sleep 0.02; done\n"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")


def serves(port: int) -> dict[str, str] | None:
    try:
        answer: dict[str, str] = get_json(port)
    except OSError:
        return None
    return answer


def test_one_apps_bad_formation_marks_it_broken_and_the_others_run(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    dokuen.deploy("good", write_app(apps_dir / "good", WEB))
    dokuen.deploy("bad", write_app(apps_dir / "bad", WEB))
    wait_for(lambda: dokuen.running("good", 1) and dokuen.running("bad", 1), "both running")
    assert dokuen.terminate() == 0
    formation = dokuen.home / "apps" / "bad" / "formation.json"
    formation.write_text('{"web": 1')  # cut short, by hand or a crash of someone's editor

    dokuen.start()
    good = wait_for(lambda: dokuen.running("good", 1), "good restored")[0]
    assert serves(good["port"])
    assert dokuen.ps("bad") == []
    listing = {app["name"]: app for app in json.loads(dokuen.ctl("apps", "--json").stdout)}
    assert listing["good"]["broken"] is None
    problem = listing["bad"]["broken"]
    assert str(formation) in problem
    assert "not valid JSON" in problem
    assert "dokuenctl start bad" in problem  # the fix
    table = dokuen.ctl("apps").stdout
    assert f"broken: {formation}" in next(line for line in table.splitlines() if "bad" in line)
    status = dokuen.ctl("status")
    assert f"broken     bad: {formation}" in status.stdout
    assert json.loads(dokuen.ctl("status", "--json").stdout)["broken"] == {"bad": problem}
    assert f"bad[dokuen]: broken, not restored: {formation}" in dokuen.log()

    # Still bad: restarting it says why, in one line.
    failed = dokuen.ctl("restart", "bad", check=False)
    assert failed.returncode == 1
    assert_one_line_error(failed.stderr, str(formation))
    # Fixed: start brings it back, and it is no longer broken.
    formation.write_text('{"web": 1}\n')
    dokuen.ctl("start", "bad")
    bad = wait_for(lambda: dokuen.running("bad", 1), "bad back")[0]
    assert serves(bad["port"])
    listing = {app["name"]: app for app in json.loads(dokuen.ctl("apps", "--json").stdout)}
    assert listing["bad"]["broken"] is None
    assert dokuen.ps("good")[0]["pid"] == good["pid"]


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("domains", lambda app: (app / "domains").write_text("Not A Domain!\n")),
        ("env", lambda app: (app / "env" / "bad key").write_text("x")),
        ("current", lambda app: ((app / "current").unlink(), (app / "current").symlink_to("x"))),
        ("v1.json", lambda app: (app / "releases" / "v1.json").write_text("[]")),
    ],
)
def test_each_bad_state_file_marks_only_its_app_broken(
    dokuen: Dokuen, apps_dir: Path, name: str, damage: object
) -> None:
    dokuen.deploy("good", write_app(apps_dir / "good", WEB))
    dokuen.deploy("bad", write_app(apps_dir / "bad", WEB))
    wait_for(lambda: dokuen.running("good", 1) and dokuen.running("bad", 1), "both running")
    assert dokuen.terminate() == 0
    assert callable(damage)
    damage(dokuen.home / "apps" / "bad")
    dokuen.start()
    good = wait_for(lambda: dokuen.running("good", 1), "good restored")[0]
    assert serves(good["port"])
    broken = json.loads(dokuen.ctl("status", "--json").stdout)["broken"]
    assert list(broken) == ["bad"]
    assert name in broken["bad"]
    assert "dokuenctl " in broken["bad"]  # and the fix
    assert dokuen.ps("bad") == []


def web_servers(home: Path) -> list[int]:
    """The pids of the test web servers running in a release under ``home``."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        cwd, cmdline = process.info["cwd"] or "", process.info["cmdline"] or []
        if cwd.startswith(str(home)) and "envserver.py" in cmdline:
            found.append(process.pid)
    return found


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs to be dokuend's home, unmounted at the end."""
    mount = tmp_path / "home"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill the file system of ``disk`` to the last byte; return the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 1):  # then the last bytes of a partial block
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


@root_only
@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_a_full_disk_fails_the_writes_and_everything_keeps_serving(
    small_disk: Path, apps_dir: Path
) -> None:
    with nginx_dokuen(small_disk) as daemon:
        port = http_port(daemon)
        daemon.deploy(
            "blog",
            write_app(
                apps_dir / "blog", WEB + "talker: while :; do echo hello; sleep 0.02; done\n"
            ),
        )
        rows = wait_for(lambda: daemon.running("blog", 2), "blog running")
        web = next(row for row in rows if row["type"] == "web")
        wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
        filler = fill(small_disk)

        config = daemon.ctl("config:set", "blog", "NEW=1", "OTHER=2", check=False)
        assert config.returncode == 1
        assert_one_line_error(config.stderr, "No space left on device (the disk is full")
        scale = daemon.ctl("ps:scale", "blog", "web=2", check=False)
        assert scale.returncode == 1
        assert_one_line_error(scale.stderr, "formation.json")
        # No state write comes first here: nginx's config is the write that fails.
        restart = daemon.ctl("restart", "blog", "web", check=False)
        assert restart.returncode == 1
        assert_one_line_error(restart.stderr, "nginx config not written")
        # The log writer loses lines (the talker says "hello" all the time), and goes on.
        wait_for(lambda: "log.write_failed" in daemon.daemon_stderr(), "a failed log write")

        # What served before still serves: the same process, the old config, through nginx.
        assert daemon.ctl("config", "blog", "--json").stdout.strip() == "{}"
        assert [row["pid"] for row in daemon.ps("blog") if row["type"] == "web"] == [web["pid"]]
        assert env_via(port, "blog.localhost")["PORT"] == str(web["port"])  # type: ignore[index]
        assert not list((small_disk / "apps" / "blog" / "env").iterdir())  # no half-written
        assert web_servers(small_disk) == [web["pid"]]  # the failed restart's process is gone
        assert daemon.process is not None
        assert daemon.process.poll() is None

        filler.unlink()
        said = daemon.log().count("blog[talker.1]: hello")
        daemon.ctl("config:set", "blog", "NEW=1")
        fresh = wait_for(lambda: env_via(port, "blog.localhost"), "blog with its new config")
        assert fresh["NEW"] == "1"
        wait_for(lambda: daemon.log().count("blog[talker.1]: hello") > said, "log lines again")


def test_idle_clients_are_dropped_and_running_out_of_descriptors_is_survived(
    tmp_path: Path, apps_dir: Path
) -> None:
    daemon = Dokuen(
        home=tmp_path / "home",
        ports=free_port_block(),
        extra_env={"DOKUEN_CONTROL_TIMEOUT": "1"},
        # A soft limit the daemon raises to the hard one, which is low: 128 descriptors.
        launcher=("sh", "-c", 'ulimit -Sn 32 && ulimit -Hn 128 && exec "$0"'),
    )
    daemon.start()
    crowd: list[socket.socket] = []
    try:
        assert daemon.process is not None
        limits = Path(f"/proc/{daemon.process.pid}/limits").read_text()
        row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert row.split()[3:5] == ["128", "128"]  # soft raised to the hard limit

        daemon.deploy("blog", write_app(apps_dir / "blog", WEB))
        web = wait_for(lambda: daemon.running("blog", 1), "web.1")[0]
        follower = subprocess.Popen(
            [str(BIN / "dokuenctl"), "logs", "-f", "blog", "-n", "0"],
            env=daemon.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        # One silent client is dropped after the timeout.
        silent = socket.socket(socket.AF_UNIX)
        silent.connect(str(daemon.home / "dokuend.sock"))
        silent.settimeout(10)
        started = time.monotonic()
        with silent:
            assert silent.recv(1) == b""
        assert 0.8 < time.monotonic() - started < 5

        # More silent clients than the daemon has descriptors: accept fails with EMFILE
        # until the timeout frees some; the daemon lives through it.
        for _ in range(200):
            client = socket.socket(socket.AF_UNIX)
            client.setblocking(False)
            try:
                client.connect(str(daemon.home / "dokuend.sock"))
            except BlockingIOError:
                pass
            except OSError:  # the backlog is full
                client.close()
                break
            crowd.append(client)
        wait_for(lambda: "control.accept_failed" in daemon.daemon_stderr(), "EMFILE on accept")
        wait_for(
            lambda: daemon.ctl("status", check=False, timeout=20).returncode == 0,
            "status after the crowd",
            timeout=60,
        )
        for client in crowd:
            client.close()
        assert daemon.process.poll() is None
        assert "Too many open files" in daemon.daemon_stderr()
        assert serves(web["port"])

        # The follower was never idle: it is still there, and still gets lines.
        assert follower.poll() is None
        daemon.ctl("restart", "blog")
        assert follower.stdout is not None
        while "restarting" not in follower.stdout.readline():
            pass
        follower.terminate()
        follower.wait(10)
        follower.stdout.close()
    finally:
        for client in crowd:
            client.close()
        if daemon.process is not None:
            daemon.terminate()


def start_with_stderr(daemon: Dokuen, stderr: int) -> None:
    """Start ``daemon`` with ``stderr`` as its stderr (and stdout)."""
    daemon.home.mkdir(parents=True, exist_ok=True)
    daemon.process = subprocess.Popen(
        [*daemon.launcher, str(BIN / "dokuend")],
        env=daemon.env,
        stdout=stderr,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
    )
    wait_for(lambda: daemon.ctl("status", check=False).returncode == 0, "dokuend to answer")


def exercise(daemon: Dokuen, apps_dir: Path) -> None:
    """Things that make the daemon log: a deploy, a crash, a restart, SIGHUP, a bad request.
    A failed check still stops the daemon (and its apps) before the test ends."""
    assert daemon.process is not None
    try:
        _exercise(daemon, apps_dir)
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.terminate()  # only when a check above failed: its apps stop with it


def _exercise(daemon: Dokuen, apps_dir: Path) -> None:
    assert daemon.process is not None
    daemon.deploy("blog", write_app(apps_dir / "blog", WEB))
    web = wait_for(lambda: daemon.running("blog", 1), "web.1")[0]
    os.kill(web["pid"], signal.SIGKILL)
    wait_for(
        lambda: (rows := daemon.running("blog", 1)) and rows[0]["pid"] != web["pid"],
        "web.1 back",
    )
    daemon.ctl("restart", "blog")
    daemon.process.send_signal(signal.SIGHUP)
    assert daemon.ctl("ps:scale", "blog", "nope=1", check=False).returncode == 2
    assert daemon.ctl("status", "--json").returncode == 0
    rows = wait_for(lambda: daemon.running("blog", 1), "web.1 after all that")
    assert serves(rows[0]["port"])
    assert daemon.process.poll() is None
    assert daemon.terminate() == 0


def test_a_closed_stderr_never_stops_the_daemon(tmp_path: Path, apps_dir: Path) -> None:
    daemon = Dokuen(
        home=tmp_path / "home",
        ports=free_port_block(),
        launcher=("sh", "-c", 'exec "$0" 2>&- >&- <&-'),
    )
    start_with_stderr(daemon, subprocess.DEVNULL)
    exercise(daemon, apps_dir)


def test_a_stderr_pipe_whose_reader_left_never_stops_the_daemon(
    tmp_path: Path, apps_dir: Path
) -> None:
    daemon = Dokuen(home=tmp_path / "home", ports=free_port_block())
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the daemon's stderr now fails with EPIPE
    try:
        start_with_stderr(daemon, write_end)
    finally:
        os.close(write_end)
    exercise(daemon, apps_dir)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_a_deleted_nginx_directory_is_made_again(tmp_path: Path, apps_dir: Path) -> None:
    with nginx_dokuen(tmp_path / "home") as daemon:
        port = http_port(daemon)
        daemon.deploy("blog", write_app(apps_dir / "blog", WEB))
        wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
        site = daemon.home / "nginx" / "apps" / "blog.conf"
        assert site.exists()
        subprocess.run(["rm", "-rf", str(daemon.home / "nginx")], check=True)
        wait_for(site.exists, "nginx/ made again", timeout=10)
        assert "nginx was deleted; made it again" in daemon.log()
        # nginx reloads from the new files: a scale reaches it, and both answer.
        daemon.ctl("ps:scale", "blog", "web=2")
        rows = wait_for(lambda: daemon.running("blog", 2), "two web processes")
        seen = set()
        wait_for(
            lambda: seen.add(env_via(port, "blog.localhost")["PORT"]) or len(seen) == 2,  # type: ignore[func-returns-value,index]
            "both web processes through nginx",
        )
        assert seen == {str(row["port"]) for row in rows}
        # nginx/ renamed away (the kernel says so of nginx/ itself), then a part of it
        # deleted (of a name in it): each is made again.
        (daemon.home / "nginx").rename(daemon.home / "nginx.moved")
        wait_for(site.exists, "nginx/ made again after a rename", timeout=10)
        # (Not an rmtree of nginx/temp: the reload after the heal may make its parts
        # meanwhile, and the rmtree failed "Directory not empty" one run in four.)
        config = daemon.home / "nginx" / "nginx.conf"
        config.unlink()
        wait_for(config.exists, "nginx/nginx.conf made again", timeout=10)
        assert daemon.process is not None
        assert daemon.process.poll() is None


def test_a_deleted_app_directory_is_reported_and_the_others_run(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    dokuen.deploy("good", write_app(apps_dir / "good", WEB))
    dokuen.deploy("gone", write_app(apps_dir / "gone", WEB))
    good = wait_for(lambda: dokuen.running("good", 1), "good")[0]
    wait_for(lambda: dokuen.running("gone", 1), "gone")
    subprocess.run(["rm", "-rf", str(dokuen.home / "apps" / "gone")], check=True)
    broken = json.loads(dokuen.ctl("status", "--json").stdout)["broken"]
    assert list(broken) == ["gone"]
    assert "is missing" in broken["gone"]
    assert "apps:destroy gone --confirm gone" in broken["gone"]
    scale = dokuen.ctl("ps:scale", "gone", "web=2", check=False)
    assert scale.returncode == 1
    assert_one_line_error(scale.stderr, "gone")
    dokuen.ctl("apps:destroy", "gone", "--confirm", "gone")
    assert [app["name"] for app in json.loads(dokuen.ctl("apps", "--json").stdout)] == ["good"]
    assert dokuen.ps("good")[0]["pid"] == good["pid"]
    assert serves(good["port"])


def test_the_open_files_limit_is_the_hard_limit(dokuen: Dokuen) -> None:
    assert dokuen.process is not None
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = Path(f"/proc/{dokuen.process.pid}/limits").read_text()
    row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    expected = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    assert row.split()[4] == expected
    assert row.split()[3] == expected or hard == resource.RLIM_INFINITY
