"""Resource control end to end, as root on this machine's real cgroups (v1 and v2): a stop
kills what a process hid with setsid, double forks and fork-hopping; a build leaves nothing
behind; the app's memory and process limits hold; ``ps`` shows what each process uses."""

import json
import os
import shutil
import signal
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dokuen.isolate.cgroups import Cgroups
from dokuen.isolate.hierarchy import discover
from tests.e2e.conftest import (
    Dokuen,
    free_port_block,
    leftover_processes,
    wait_for,
    write_app,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="cgroups are root's to hand out here"),
]

# Forks a child and exits, again and again: its pid changes faster than one kill pass (or
# `ps`) looks, so it shows itself by the heartbeat file it writes on every hop.
HOPPER = """
import os, sys, time
while True:
    if os.fork():
        os._exit(0)
    with open(sys.argv[2], "w") as beat:
        beat.write(str(os.getpid()))
    time.sleep(0.002)
"""
# Hides a sleep from the process group, the session and the subreaper's APP/DYNO/HOME
# checks (setsid, a double fork, env -i), and leaves a fork-hopper running.
HIDER = """
(setsid env -i sleep 1{marker} >/dev/null 2>&1 &)
setsid env -i python3 "{hopper}" 2{marker} "{beat}" >/dev/null 2>&1 &
"""
FORK_BOMB = """
import os, time
forked = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(3600)
            os._exit(0)
        forked += 1
except OSError as exc:
    print(f"forked {forked} then {type(exc).__name__}", flush=True)
time.sleep(3600)
"""
MEMORY_HOG = """
import time
hoard = []
while True:
    hoard.append(b"x" * (8 << 20))
    time.sleep(0.01)
"""
BURNER = """
import time
end = time.process_time() + 1.0
while time.process_time() < end:
    pass
print("burnt", flush=True)
time.sleep(3600)
"""


def groups_of(mode: str, home: Path) -> Cgroups:
    cgroups, why = discover(mode, home)
    assert cgroups is not None, why
    return cgroups


@pytest.fixture(params=["v1", "v2"])
def mode(request: pytest.FixtureRequest) -> str:
    if discover(request.param, Path("/nonexistent"))[0] is None:
        pytest.skip(f"this machine has no writable cgroup {request.param}")
    return str(request.param)


def _marker() -> str:
    return f"{os.getpid() % 1000 + 1000}{time.monotonic_ns() % 10000:04d}"


@pytest.fixture
def beat() -> Iterator[Path]:
    """The hopper's heartbeat file, where a build's uid may write it too."""
    path = Path(f"/tmp/dokuen-hopper-{os.getpid()}-{time.monotonic_ns()}")
    yield path
    path.unlink(missing_ok=True)


def hopping(beat: Path) -> bool:
    """True while a hopper writes its heartbeat (a new pid each hop)."""
    before = beat.read_text() if beat.exists() else ""
    time.sleep(0.3)
    return beat.exists() and beat.read_text() != before


@pytest.fixture
def daemon(tmp_path: Path, mode: str) -> Iterator[Dokuen]:
    home = tmp_path / "home"
    daemon = Dokuen(home=home, ports=free_port_block(), extra_env={"DOKUEN_CGROUPS": mode})
    daemon.start()
    try:
        yield daemon
        if daemon.process is not None:
            assert daemon.terminate() == 0
        # A daemon that stops removes every group it made.
        assert [d for d in groups_of(mode, home).root.directories() if d.exists()] == []
    finally:
        if daemon.process is not None:
            daemon.process.kill()
        groups_of(mode, home).clear()  # whatever a failed test left


def test_a_stop_kills_what_hid_from_the_session_and_the_subreaper(
    daemon: Dokuen, tmp_path: Path, mode: str, beat: Path
) -> None:
    marker = _marker()
    hider = HIDER.format(marker=marker, hopper=tmp_path / "src" / "hopper.py", beat=beat)
    source = write_app(
        tmp_path / "src",
        f"worker: sh hider.sh && exec sleep 3{marker}\n",
        {"hider.sh": hider, "hopper.py": HOPPER},
    )
    daemon.deploy("hider", source)
    wait_for(lambda: len(leftover_processes(marker)) >= 2, "the hidden sleep and the process")
    wait_for(lambda: hopping(beat), "the fork-hopper")
    status = json.loads(daemon.ctl("status", "--json").stdout)["cgroups"]
    assert status["mode"] == mode
    app_group = groups_of(mode, daemon.home).app("hider")
    assert [d for d in app_group.directories()[0].iterdir() if d.is_dir()], "no process group"

    daemon.ctl("stop", "hider")
    assert leftover_processes(marker) == []
    assert not hopping(beat)
    assert daemon.ps("hider") == []
    # The process's group went with it; the app's own stays for its next start.
    for directory in app_group.directories():
        assert [d.name for d in directory.iterdir() if d.is_dir()] == []


def test_a_build_leaves_no_process_behind(daemon: Dokuen, tmp_path: Path, beat: Path) -> None:
    marker = _marker()
    pack = tmp_path / "leaky"
    (pack / "bin").mkdir(parents=True)
    (pack / "hopper.py").write_text(HOPPER)
    scripts = {
        "detect": "echo Leaky",
        "compile": HIDER.format(marker=marker, hopper=pack / "hopper.py", beat=beat)
        + f'while [ ! -s "{beat}" ]; do sleep 0.01; done\n',
        "release": "echo '--- {}'",
    }
    for name, body in scripts.items():
        (pack / "bin" / name).write_text("#!/bin/sh\n" + textwrap.dedent(body))
        (pack / "bin" / name).chmod(0o755)
    daemon.ctl("apps:create", "leaky")
    daemon.ctl("config:set", "leaky", f"BUILDPACK_URL={pack}")
    daemon.deploy("leaky", write_app(tmp_path / "src", "web: sleep 1000\n"))
    assert leftover_processes(marker) == []
    assert not hopping(beat)


@pytest.mark.parametrize("mode", ["v1"])  # the memory controller is bound to v1 here
def test_the_memory_limit_kills_a_memory_hog_and_says_so(daemon: Dokuen, tmp_path: Path) -> None:
    daemon.ctl("apps:create", "hog")
    daemon.ctl("config:set", "hog", "DOKUEN_MEMORY_LIMIT=64M", "DOKUEN_RESTART_LIMIT=2")
    daemon.deploy(
        "hog", write_app(tmp_path / "src", "worker: python3 hog.py\n", {"hog.py": MEMORY_HOG})
    )
    wait_for(
        lambda: "hog[dokuen]: worker.1 out of memory (DOKUEN_MEMORY_LIMIT): killed" in daemon.log(),
        "the kernel's kill to be told in the log",
    )
    group = groups_of("v1", daemon.home).app("hog")
    assert group.file("memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    assert "worker.1 exited with code -9" not in daemon.log()
    assert "killed by SIGKILL" in daemon.log()


@pytest.mark.parametrize("mode", ["v1"])  # the pids controller is bound to v1 here
def test_the_process_limit_stops_a_fork_bomb(daemon: Dokuen, tmp_path: Path) -> None:
    daemon.ctl("apps:create", "bomb")
    daemon.ctl("config:set", "bomb", "DOKUEN_PROCESS_LIMIT=10")
    daemon.deploy(
        "bomb", write_app(tmp_path / "src", "worker: python3 bomb.py\n", {"bomb.py": FORK_BOMB})
    )
    # The bomb itself is one of the ten: nine children, then fork fails.
    wait_for(lambda: "forked 9 then BlockingIOError" in daemon.log(), "the bomb to hit its limit")
    group = groups_of("v1", daemon.home).app("bomb")
    assert group.file("pids.max").read_text().strip() == "10"
    assert len(group.pids()) == 10
    daemon.ctl("stop", "bomb")
    assert group.pids() == set()


@pytest.mark.parametrize("mode", ["v1", "v2", "off"])
def test_ps_shows_each_process_cpu_and_memory(tmp_path: Path, mode: str) -> None:
    daemon = Dokuen(
        home=tmp_path / "home", ports=free_port_block(), extra_env={"DOKUEN_CGROUPS": mode}
    )
    daemon.start()
    try:
        daemon.deploy(
            "burn", write_app(tmp_path / "src", "worker: python3 burn.py\n", {"burn.py": BURNER})
        )
        wait_for(lambda: "burn[worker.1]: burnt" in daemon.log(), "a second of cpu burnt")
        (row,) = daemon.ps("burn")
        assert 0.9 <= row["cpu"] < 30
        assert 1 << 20 < row["memory"] < 1 << 30
        table = daemon.ctl("ps", "burn").stdout
        assert "CPU" in table
        assert " MB " in table
    finally:
        daemon.terminate()


def test_without_cgroups_status_says_what_stops_rely_on(dokuen: Dokuen) -> None:
    dokuen.terminate()
    dokuen.extra_env["DOKUEN_CGROUPS"] = "off"
    dokuen.start()
    status = json.loads(dokuen.ctl("status", "--json").stdout)["cgroups"]
    assert status == {
        "mode": "off",
        "groups": [],
        "controllers": [],
        "problem": "off (DOKUEN_CGROUPS=off)",
    }
    lines = dokuen.ctl("status").stdout.splitlines()
    (line,) = [line for line in lines if line.startswith("cgroups")]
    assert "off" in line
    assert "subreaper" in line


def test_bad_limits_are_refused_at_config_set(dokuen: Dokuen) -> None:
    dokuen.ctl("apps:create", "blog")
    for setting, expected in (
        ("DOKUEN_MEMORY_LIMIT=lots", "DOKUEN_MEMORY_LIMIT='lots' is not a memory size"),
        ("DOKUEN_MEMORY_LIMIT=1K", "of at least 4M"),
        ("DOKUEN_PROCESS_LIMIT=0", "DOKUEN_PROCESS_LIMIT='0' is not a number of processes"),
        ("DOKUEN_PROCESS_LIMIT=-5", "from 1 to"),
    ):
        result = dokuen.ctl("config:set", "blog", setting, check=False)
        assert result.returncode == 1, setting
        assert expected in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert "DOKUEN_MEMORY_LIMIT" not in dokuen.ctl("config", "blog").stdout


def test_a_new_daemon_adopts_or_kills_what_a_killed_one_left_running(
    daemon: Dokuen, tmp_path: Path, mode: str
) -> None:
    """The process the formation still wants is adopted in its cgroup (same pid); once the
    formation no longer wants it, the next dokuend kills it, group and all."""
    marker = _marker()
    daemon.deploy("orphan", write_app(tmp_path / "src", f"worker: exec sleep 4{marker}\n"))
    wait_for(lambda: leftover_processes(marker), "the process")
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGKILL)  # no chance to stop its apps
    daemon.process.wait()
    daemon.process = None
    (old,) = leftover_processes(marker)
    daemon.start()
    wait_for(lambda: daemon.running("orphan", 1), "the app restored")
    assert [p.pid for p in leftover_processes(marker)] == [old.pid]  # adopted, not copied
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait()
    daemon.process = None
    (daemon.home / "apps/orphan/formation.json").write_text('{"worker": 0}\n')
    daemon.start()
    wait_for(lambda: not leftover_processes(marker), "the unwanted process killed")
    assert not old.is_running() or old.status() == psutil.STATUS_ZOMBIE
    assert daemon.ps("orphan") == []


@pytest.fixture
def open_home() -> Iterator[Path]:
    """A DOKUEN_HOME the build user can reach (pytest's temporary directories are 0700)."""
    top = Path(tempfile.mkdtemp(prefix="dokuen-cgroup-"))
    top.chmod(0o755)
    yield top
    shutil.rmtree(top)


def test_without_cgroups_a_build_uid_is_killed_until_none_is_left(
    open_home: Path, beat: Path
) -> None:
    """No cgroup to kill: the build's uid is, pass after pass, fork-hopper and all."""
    daemon = Dokuen(home=open_home / "home", ports=free_port_block())
    daemon.extra_env.update(DOKUEN_CGROUPS="off", DOKUEN_BUILD_UIDS="2100002000-2100002009")
    daemon.start()
    marker = _marker()
    try:
        pack = open_home / "leaky"
        (pack / "bin").mkdir(parents=True)
        (pack / "hopper.py").write_text(HOPPER)
        compile_ = HIDER.format(marker=marker, hopper=pack / "hopper.py", beat=beat)
        compile_ += f'while [ ! -s "{beat}" ]; do sleep 0.01; done\n'
        for name, body in {"detect": "echo Leaky", "compile": compile_}.items():
            (pack / "bin" / name).write_text("#!/bin/sh\n" + body)
            (pack / "bin" / name).chmod(0o755)
        daemon.ctl("apps:create", "leaky")
        daemon.ctl("config:set", "leaky", f"BUILDPACK_URL={pack}")
        daemon.deploy("leaky", write_app(open_home / "src", "web: sleep 1000\n"))
        assert beat.stat().st_uid == 2100002000  # the hopper ran as the build's uid
        assert leftover_processes(marker) == []
        assert not hopping(beat)
    finally:
        daemon.terminate()
