"""dokuend's own lifecycle: a ``kill -9`` of the daemon, a restart and a re-exec in place
(``daemon:reload``) never take the apps down. Real dokuend, real nginx, real processes."""

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import Dokuen, find_nginx_binary, free_port_block, wait_for, write_app

pytestmark = pytest.mark.skipif(
    find_nginx_binary() is None, reason="nginx is not installed (bin/setup installs it)"
)

# A worker that numbers its lines: every number must reach the log exactly once.
COUNTER = """\
import time
n = 0
while True:
    n += 1
    print(f"tick {n}", flush=True)
    time.sleep(0.005)
"""
PROCFILE = "web: python3 envserver.py\nclock: python3 -u counter.py\n"


class Load(threading.Thread):
    """Requests through nginx in a loop until stopped; counts every status (or error)."""

    def __init__(self, port: int, host: str) -> None:
        super().__init__(daemon=True)
        self.port, self.host = port, host
        self.results: Counter[str] = Counter()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                connection.request("GET", "/", headers={"Host": self.host})
                self.results[str(connection.getresponse().status)] += 1
            except OSError as exc:
                self.results[type(exc).__name__] += 1
            finally:
                connection.close()

    def stop(self) -> Counter[str]:
        self.halt.set()
        self.join(10)
        return self.results


def answers(port: int, host: str) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/", headers={"Host": host})
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def ticks(log: str, dyno: str) -> list[int]:
    return [int(n) for n in re.findall(rf"blog\[{re.escape(dyno)}\]: tick (\d+)$", log, re.M)]


def assert_every_tick_once(log: str, dyno: str) -> int:
    """Every number from the first to the last is in the log exactly once."""
    seen = ticks(log, dyno)
    assert seen, f"no line of {dyno} in the log"
    counts = Counter(seen)
    twice = sorted(n for n, c in counts.items() if c > 1)
    missing = sorted(set(range(1, max(seen) + 1)) - set(seen))
    assert not twice, f"{dyno}: lines written twice: {twice[:10]}"
    assert not missing, f"{dyno}: lines lost: {missing[:10]} ({len(missing)} in all)"
    return max(seen)


def pids(daemon: Dokuen) -> dict[str, int]:
    return {row["name"]: row["pid"] for row in daemon.ps("blog")}


def nginx_pid(daemon: Dokuen) -> int | None:
    pid = json.loads(daemon.ctl("status", "--json").stdout)["nginx"]["pid"]
    return int(pid) if pid else None


def started_at(daemon: Dokuen) -> float | None:
    """When the dokuend image that answers now started; None while none answers."""
    result = daemon.ctl("status", "--json", check=False)
    return float(json.loads(result.stdout)["started"]) if result.returncode == 0 else None


@pytest.fixture
def entry(tmp_path: Path) -> Path:
    """dokuend's entry point as a file of this test's own, which a test may break (a bad
    upgrade) without touching the environment other tests share."""
    script = tmp_path / "dokuend-entry.py"
    script.write_text(
        "import sys\nfrom dokuen.cli.dokuend import main\n\n"
        "if sys.argv[1:2] and sys.argv[1].endswith('/dokuend'):\n"
        "    del sys.argv[1]  # the fixture's own dokuend path\nmain()\n"
    )
    return script


@pytest.fixture
def served(tmp_path: Path, entry: Path) -> Iterator[tuple[Dokuen, int]]:
    """A dokuend with nginx in front and ``blog`` deployed: web.1, clock.1 and clock.2."""
    port = free_port_block(1)[0]
    daemon = Dokuen(
        home=tmp_path / "home",
        ports=free_port_block(),
        extra_env={
            "DOKUEN_NGINX": "managed",
            "DOKUEN_HTTP_PORT": str(port),
            "DOKUEN_HTTP_ADDR": "127.0.0.1",
        },
        launcher=(sys.executable, str(entry)),
    )
    daemon.start()
    try:
        daemon.deploy("blog", write_app(tmp_path / "src", PROCFILE, {"counter.py": COUNTER}))
        daemon.ctl("ps:scale", "blog", "clock=2")
        wait_for(lambda: daemon.running("blog", 3), "blog's three processes")
        wait_for(lambda: answers(port, "blog.localhost"), "blog through nginx")
        yield daemon, port
    finally:
        if daemon.process is not None:
            daemon.terminate()
        for process in psutil.process_iter(["cmdline", "cwd"]):  # a failed test's leftovers
            if str(daemon.home) in " ".join(
                [*(process.info["cmdline"] or []), process.info["cwd"] or ""]
            ):
                process.kill()


def test_a_killed_dokuend_is_replaced_by_one_that_adopts_everything(
    served: tuple[Dokuen, int],
) -> None:
    """kill -9 of dokuend, lines written while none runs, a formation changed meanwhile:
    the next dokuend adopts web.1, clock.1 and nginx (same pids, same ports, serving all
    along), stops clock.2 (no longer in the formation) and loses no line."""
    daemon, port = served
    before, master = pids(daemon), nginx_pid(daemon)
    assert daemon.process is not None
    assert master is not None
    load = Load(port, "blog.localhost")
    load.start()
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait()
    daemon.process = None
    formation = daemon.home / "apps" / "blog" / "formation.json"
    formation.write_text(json.dumps({"web": 1, "clock": 1}))
    at_kill = max(ticks(daemon.log(), "clock.1"))  # the last line the dead one wrote
    time.sleep(1.0)  # the apps serve and write with no daemon at all
    assert psutil.pid_exists(before["web.1"])
    assert psutil.pid_exists(master)
    daemon.start()
    wait_for(lambda: len(daemon.ps("blog")) == 2 or None, "the formation of two")
    after = pids(daemon)
    assert after == {"web.1": before["web.1"], "clock.1": before["clock.1"]}
    assert nginx_pid(daemon) == master
    gone = psutil.Process(before["clock.2"]) if psutil.pid_exists(before["clock.2"]) else None
    assert gone is None or gone.status() == psutil.STATUS_ZOMBIE
    assert answers(port, "blog.localhost")
    results = load.stop()
    assert set(results) == {"200"}, results
    # The ~200 lines clock.1 wrote with no daemon waited in its FIFO and are in the log.
    # What the killed dokuend had read but not yet written (one batch, a few lines right
    # after the last it wrote) died with it; nothing else may be missing, nothing doubled.
    wait_for(lambda: max(ticks(daemon.log(), "clock.1")) > at_kill + 300, "clock.1's lines")
    seen = ticks(daemon.log(), "clock.1")
    assert len(seen) == len(set(seen)), "a line written twice"
    missing = set(range(1, max(seen) + 1)) - set(seen)
    assert all(at_kill < n <= at_kill + 40 for n in missing), sorted(missing)
    log = daemon.log()
    assert "blog[dokuen]: web.1 adopted, pid" in log
    assert "nginx[dokuen]: master adopted" in log
    # Adopted processes are supervised as before: one that exits is restarted.
    os.kill(after["clock.1"], signal.SIGKILL)
    wait_for(
        lambda: (p := pids(daemon).get("clock.1")) and p != after["clock.1"] and p,
        "clock.1 restarted after its exit",
    )
    # The adopted master passes the checks before its SIGHUP (pidfd, command line, pid
    # file): a new domain reaches it.
    reloads = daemon.log().count("nginx[dokuen]: reloaded")
    daemon.ctl("domains:add", "blog", "blog.example.test")
    wait_for(lambda: answers(port, "blog.example.test"), "the new domain through nginx")
    assert daemon.log().count("nginx[dokuen]: reloaded") > reloads
    assert nginx_pid(daemon) == master
    assert daemon.terminate() == 0
    assert not psutil.pid_exists(before["web.1"]) or (
        psutil.Process(before["web.1"]).status() == psutil.STATUS_ZOMBIE
    )


def test_what_a_broken_app_was_offered_is_stopped_not_left_running(
    served: tuple[Dokuen, int],
) -> None:
    """kill -9 of dokuend, then one app's formation.json spoiled: the next dokuend marks the
    app broken and ends every process it had been offered (none is left running unwatched)."""
    daemon, _ = served
    before = pids(daemon)
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait()
    daemon.process = None
    (daemon.home / "apps" / "blog" / "formation.json").write_text("{")
    daemon.start()

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(lambda: all(gone(pid) for pid in before.values()), "the offered processes to end")
    apps = json.loads(daemon.ctl("apps", "--json").stdout)
    (blog,) = [a for a in apps if a["name"] == "blog"]
    assert "formation.json" in blog["broken"]
    assert daemon.ps("blog") == []


@pytest.mark.slow  # two re-execs under load: about 20 s
def test_daemon_reload_re_executes_in_place_under_load(served: tuple[Dokuen, int]) -> None:
    """``daemon:reload``: a new dokuend image in the same process; every app process, the
    nginx master and the port stay, 0 failed requests, 0 lost or doubled log lines."""
    daemon, port = served
    assert daemon.process is not None
    before, master = pids(daemon), nginx_pid(daemon)
    started = json.loads(daemon.ctl("status", "--json").stdout)["started"]
    load = Load(port, "blog.localhost")
    load.start()
    socket_inode = (daemon.home / "dokuend.sock").stat().st_ino
    asked: list[int] = []  # dokuenctl status exit codes while the reload runs
    halt = threading.Event()

    def ask() -> None:
        while not halt.is_set():
            asked.append(daemon.ctl("status", check=False).returncode)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    time.sleep(0.3)
    result = daemon.ctl("daemon:reload")
    halt.set()
    asker.join(60)
    # The control socket itself was handed over: a client never found it missing.
    assert asked
    assert set(asked) == {0}, asked
    assert (daemon.home / "dokuend.sock").stat().st_ino == socket_inode
    assert re.fullmatch(r"dokuend \S+ re-executed \(pid \d+\) in [\d.]+s\n", result.stdout)
    status = json.loads(daemon.ctl("status", "--json").stdout)
    assert status["pid"] == daemon.process.pid  # the same process, a new image
    assert status["started"] != started
    assert pids(daemon) == before
    assert nginx_pid(daemon) == master
    time.sleep(0.3)
    results = load.stop()
    assert set(results) == {"200"}, results
    assert sum(results.values()) > 20
    for dyno in ("clock.1", "clock.2"):
        count = len(ticks(daemon.log(), dyno))

        def more(dyno: str = dyno, count: int = count) -> bool:
            return assert_every_tick_once(daemon.log(), dyno) > count + 20

        wait_for(more, f"{dyno}'s lines after the re-exec")
    # Still supervised as children: an exit is seen with its real status and restarted.
    os.kill(before["clock.2"], signal.SIGKILL)
    wait_for(lambda: "blog[dokuen]: clock.2 killed by SIGKILL" in daemon.log(), "the exit")
    wait_for(lambda: pids(daemon).get("clock.2") not in (None, before["clock.2"]), "restart")
    # A second reload works as well, and SIGUSR2 does the same.
    daemon.process.send_signal(signal.SIGUSR2)
    wait_for(lambda: started_at(daemon) not in (None, status["started"]), "the re-exec on SIGUSR2")
    assert pids(daemon)["web.1"] == before["web.1"]
    assert daemon.terminate() == 0


def test_a_failing_new_dokuend_is_refused_and_the_old_one_goes_on(
    served: tuple[Dokuen, int], entry: Path
) -> None:
    """A broken upgrade (the new program does not start) is reported in one line; the
    running dokuend, its apps and nginx are untouched, though the reaper wakes at the
    check's SIGCHLD: the check's exit status is the check's, not stolen."""
    daemon, _port = served
    before = pids(daemon)
    entry.write_text("raise SystemExit('this dokuend upgrade is broken')\n")
    for _ in range(3):  # a stolen status read 0 two times in three: the broken one ran
        result = daemon.ctl("daemon:reload", check=False)
        assert result.returncode == 1
        assert result.stderr == (
            "error: the new dokuend does not start (this dokuend upgrade is broken); fix the "
            "installation and try again\n"
        )
        assert len(result.stderr.strip().splitlines()) == 1
    assert pids(daemon) == before
    assert daemon.ctl("status").returncode == 0


def test_a_restart_has_no_404_window(served: tuple[Dokuen, int]) -> None:
    """A clean restart (SIGTERM, start): while nginx is up, blog never answers 404, and it
    answers 200 as soon as its process is up (no wait for other apps' checks)."""
    daemon, port = served
    load = Load(port, "blog.localhost")
    load.start()
    assert daemon.terminate() == 0
    daemon.start()
    wait_for(lambda: answers(port, "blog.localhost"), "blog through nginx again")
    results = load.stop()
    assert "404" not in results, results
    assert results["200"] > 0


def test_the_nginx_master_killed_is_noticed_and_replaced(served: tuple[Dokuen, int]) -> None:
    """kill -9 of the master while its workers hold the pipe and the port: the workers
    are ended, a new master binds and serves."""
    daemon, port = served
    master = nginx_pid(daemon)
    assert master is not None
    workers = psutil.Process(master).children()
    assert workers
    os.kill(master, signal.SIGKILL)
    wait_for(lambda: (pid := nginx_pid(daemon)) and pid != master, "a new nginx master")
    wait_for(lambda: answers(port, "blog.localhost"), "blog through the new master")
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_a_build_a_killed_dokuend_left_is_killed_and_its_release_discarded(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    """kill -9 of dokuend in the middle of a build: the pusher sees the connection drop,
    the next dokuend kills the build's processes and removes the half-made release."""
    marker = f"97{os.getpid() % 1000:03d}3"
    pack = tmp_path / "pack"
    (pack / "bin").mkdir(parents=True)
    for name, body in {
        "detect": "echo Slow",
        "compile": f'echo "-----> compiling"; mkdir -p "$1/half"; sleep {marker}',
        "release": "echo '--- {}'",
    }.items():
        (pack / "bin" / name).write_text(f"#!/bin/sh\n{body}\n")
        (pack / "bin" / name).chmod(0o755)
    dokuen.ctl("apps:create", "blog")
    dokuen.ctl("config:set", "blog", f"BUILDPACK_URL={pack}")
    source = write_app(tmp_path / "src", "web: python3 envserver.py\n")
    deploy = subprocess.Popen(
        [str(Path(sys.executable).parent / "dokuenctl"), "deploy", "blog", str(source)],
        env=dokuen.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: sleeping(marker), "the build to be compiling")
        releases = dokuen.home / "apps/blog/releases"
        assert [p.name for p in releases.iterdir()] == ["v1"]  # half made
        assert dokuen.process is not None
        dokuen.process.send_signal(signal.SIGKILL)
        dokuen.process.wait()
        dokuen.process = None
        _out, err = deploy.communicate(timeout=30)
        assert deploy.returncode != 0
        assert err.startswith("error: ")
        dokuen.start()
        wait_for(lambda: not sleeping(marker), "the orphaned build to be killed")
        assert list(releases.iterdir()) == []
        assert dokuen.ctl("releases", "blog", "--json").stdout.strip() == "[]"
        assert "blog[dokuen]: discarded v1, a build that never finished" in dokuen.log()
    finally:
        deploy.kill()
        deploy.wait()
        for process in sleeping(marker):
            process.kill()


def sleeping(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if process.info["cmdline"] == ["sleep", marker]:
            found.append(process)
    return found


def _fds(pid: int) -> dict[str, str]:
    """What each descriptor of ``pid`` points at (``socket:[N]``, a path, ``pipe:[N]``)."""
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
    return found


def test_no_descriptor_of_dokuend_leaks_into_apps_across_a_reload(
    served: tuple[Dokuen, int],
) -> None:
    """After ``daemon:reload`` (the control socket handed to the new image, the FIFOs
    reopened): no app process, adopted or started by the new image, nor the nginx master,
    holds the control socket, another socket of dokuend's or another process's FIFO."""
    daemon, _port = served
    assert daemon.process is not None
    before = pids(daemon)
    daemon.ctl("daemon:reload")
    os.kill(before["clock.2"], signal.SIGKILL)  # restarted by the new image
    wait_for(lambda: pids(daemon).get("clock.2") not in (None, before["clock.2"]), "restart")
    ours = _fds(daemon.process.pid)
    sockets = {target for target in ours.values() if target.startswith("socket:")}
    assert sockets  # the control socket at least
    fifos = str(daemon.home / "run" / "fifo")
    master = nginx_pid(daemon)
    assert master is not None
    for name, pid in [*pids(daemon).items(), ("nginx", master)]:
        held = _fds(pid)
        shared = {fd: t for fd, t in held.items() if t in sockets}
        assert not shared, f"{name} holds dokuend's sockets: {shared} (all: {held})"
        its_fifos = {t for t in held.values() if t.startswith(fifos)}
        # an app process: its own output FIFO and none other; nginx's master: none
        assert len(its_fifos) == (name != "nginx"), f"{name} holds FIFOs: {its_fifos} (all: {held})"
