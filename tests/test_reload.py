"""reload_master against real processes standing in for an nginx master (a copy of bash
named ``nginx``, run with ``-p PREFIX``, its pid in ``PREFIX/nginx.pid``): the old
workers are told to quit only once new ones run, and never when the master did not reload;
the master is signalled through a pidfd opened and checked first, so a process that got a
dead master's pid, or that only looks like our master, is never signalled."""

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import psutil
import pytest

from dokuen.proxy.master import reload_master
from dokuen.supervise import reaper

# A worker: a shell's background command ignores SIGQUIT unless told otherwise.
WORKER = "env --default-signal=QUIT sleep 1000 &"
# Between traps the master waits in `read` on a FIFO nothing writes, 50 ms at a time
# (TMOUT; no -t, which the checks would take for `nginx -t`): a trapped signal runs within
# 50 ms even if it came just before the wait began (a shell's `wait` for a child can miss
# it then and sleep until the child exits: seen under load).
IDLE = "mkfifo idle; exec 3<>idle; TMOUT=0.05; while :; do read -u 3; done"
# A master that starts a new worker on SIGHUP.
RELOADS = f'trap "{WORKER}" HUP; {WORKER} {IDLE}'
# A master that ignores SIGHUP: its config was never loaded.
IGNORES = f"trap '' HUP; {WORKER} {IDLE}"


def fake_nginx(directory: Path) -> Path:
    """A copy of bash whose executable is named nginx, as a master's is."""
    binary = directory / "nginx"
    bash = shutil.which("bash")
    assert bash is not None
    shutil.copy(Path(bash).resolve(), binary)
    return binary


def start_fake(
    prefix: Path, script: str, *flags: str, binary: Path | None = None
) -> subprocess.Popen[bytes]:
    """``script`` run as ``nginx -c SCRIPT master [FLAGS] -p PREFIX`` (its command line)."""
    return subprocess.Popen(
        ["nginx", "-c", script, "master", *flags, "-p", str(prefix)],
        executable=binary or fake_nginx(prefix),
        cwd=prefix,
        start_new_session=True,
    )


@pytest.fixture
def master(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[int]:
    process = start_fake(tmp_path, f"echo $$ > nginx.pid; {request.param}")
    try:
        # Until the worker is sleep itself: before env has reset SIGQUIT, the background
        # command ignores it (a loaded machine showed that window).
        wait_until(lambda: [name(pid) for pid in reaper.children(process.pid)] == ["sleep"])
        yield process.pid
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def name(pid: int) -> str:
    try:
        return str(psutil.Process(pid).name())
    except psutil.NoSuchProcess:
        return ""


def wait_until(predicate: object) -> None:
    async def poll() -> None:
        with anyio.fail_after(10):
            while not predicate():  # type: ignore[operator]
                await anyio.sleep(0.01)

    anyio.run(poll)


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("master", [RELOADS], indirect=True)
def test_the_old_workers_quit_once_new_ones_run(master: int, tmp_path: Path) -> None:
    (old,) = reaper.children(master)
    assert anyio.run(reload_master, master, tmp_path, 5.0, 5.0)
    assert not running(old)  # SIGQUIT from reload_master: the stand-in has no 100 ms timer
    new = reaper.children(master) - {old}
    assert len(new) == 1
    assert running(new.pop())


@pytest.mark.parametrize("master", [IGNORES], indirect=True)
def test_no_new_workers_leaves_the_old_ones_serving(master: int, tmp_path: Path) -> None:
    (old,) = reaper.children(master)
    assert anyio.run(reload_master, master, tmp_path, 0.3, 5.0)
    assert running(old)
    assert reaper.children(master) == {old}


# Run as init of a new PID namespace, where the pid the kernel gives next is this script's
# to choose (ns_last_pid) and no other process takes it: on SIGHUP the stand-in master's
# old worker is killed and reaped, its pid goes to a process that is no worker of the
# master (here the script's own child; on a machine, an app's process), then a new worker
# starts. reload_master must not SIGQUIT that process.
PID_REUSE = """
import subprocess, sys, time
from pathlib import Path
import anyio
from dokuen.proxy.master import reload_master
from dokuen.supervise import reaper

here = Path(sys.argv[1])
worker = "env --default-signal=QUIT sleep 1000 & w=$!"
trap = (
    "kill -9 $w; wait $w; echo $((w-1)) > /proc/sys/kernel/ns_last_pid; : > hup; "
    "while [ ! -e spawned ]; do :; done; " + worker
)
script = f"echo $$ > nginx.pid; trap '{trap}' HUP; {worker}; while :; do wait; done"
master = subprocess.Popen(
    ["nginx", "-c", script, "master", "-p", str(here)], executable=here / "nginx", cwd=here
)
while len(reaper.children(master.pid)) != 1:
    time.sleep(0.01)
(old,) = reaper.children(master.pid)
bystanders = []

async def main() -> None:
    async def take_the_pid() -> None:
        while not (here / "hup").exists():
            await anyio.sleep(0.001)
        bystanders.append(subprocess.Popen(["sleep", "1000"]))
        (here / "spawned").touch()

    async with anyio.create_task_group() as tg:
        tg.start_soon(take_the_pid)
        assert await reload_master(master.pid, here, 5.0, 0.3)

anyio.run(main)
(bystander,) = bystanders
assert bystander.pid == old, (bystander.pid, old)
time.sleep(0.2)
print("bystander", bystander.poll())
"""


def in_a_pid_namespace(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` beside a stand-in nginx in a PID namespace of its own (where it may
    choose the next pid), as root; it must succeed."""
    (tmp_path / "reuse.py").write_text(script)
    fake_nginx(tmp_path)
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "reuse.py", tmp_path],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_a_pid_reused_after_the_old_worker_exited_is_never_signalled(tmp_path: Path) -> None:
    done = in_a_pid_namespace(tmp_path, PID_REUSE)
    assert done.stdout.splitlines()[-1] == "bystander None"  # still running: no SIGQUIT


# The master itself dies (kill -9: its pid file stays, naming it) and its pid goes to a
# process that is not it; the next reload must not send that process SIGHUP (which ends a
# sleep, or makes another home's nginx reload).
MASTER_REUSE = """
import os, signal, subprocess, sys, time
from pathlib import Path
import anyio
from dokuen.proxy.master import reload_master

here = Path(sys.argv[1])
master = subprocess.Popen(
    ["nginx", "-c", "echo $$ > nginx.pid; while :; do sleep 1; done", "master", "-p", str(here)],
    executable=here / "nginx", cwd=here,
)
while not (here / "nginx.pid").exists() or not (here / "nginx.pid").read_text().strip():
    time.sleep(0.01)
os.kill(master.pid, signal.SIGKILL)
master.wait()
Path("/proc/sys/kernel/ns_last_pid").write_text(str(master.pid - 1))
bystander = subprocess.Popen(["sleep", "1000"])
assert bystander.pid == master.pid, (bystander.pid, master.pid)
assert int((here / "nginx.pid").read_text()) == bystander.pid
print("reloaded", anyio.run(reload_master, master.pid, here, 1.0, 0.3))
time.sleep(0.2)
print("bystander", bystander.poll())
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_a_pid_reused_after_the_master_died_is_never_signalled(tmp_path: Path) -> None:
    done = in_a_pid_namespace(tmp_path, MASTER_REUSE)
    assert done.stdout.splitlines()[-2:] == ["reloaded False", "bystander None"]


def pid_written(prefix: Path) -> bool:
    """The stand-in wrote its pid (the file exists a moment before it holds it)."""
    path = prefix / "nginx.pid"
    return path.exists() and path.read_text().strip().isdigit()


STANDS_STILL = "echo $$ > nginx.pid; sleep 1000; :"  # SIGHUP would end it


@pytest.mark.parametrize(
    "kind", ["other prefix", "config test", "not in the pid file", "not nginx", "our master"]
)
def test_only_the_master_of_the_prefix_named_by_its_pid_file_is_signalled(
    tmp_path: Path, kind: str
) -> None:
    """Each process stands where a reused pid could land; only the true master is told."""
    prefix, elsewhere = tmp_path / "prefix", tmp_path / "elsewhere"
    prefix.mkdir()
    elsewhere.mkdir()
    binary = fake_nginx(tmp_path)
    if kind == "other prefix":  # another home's nginx master
        process = start_fake(elsewhere, STANDS_STILL, binary=binary)
    elif kind == "config test":  # dokuend's own `nginx -t -p PREFIX`
        process = start_fake(prefix, STANDS_STILL, "-t", binary=binary)
    elif kind == "not in the pid file":
        process = start_fake(prefix, "sleep 1000; :", binary=binary)
        (prefix / "nginx.pid").write_text("1\n")
    elif kind == "not nginx":  # an app's process, its command line copied
        process = subprocess.Popen(
            ["nginx", "-c", STANDS_STILL, "master", "-p", str(prefix)],
            executable=Path("/bin/sh").resolve(),
            cwd=prefix,
            start_new_session=True,
        )
    else:
        process = start_fake(prefix, STANDS_STILL, binary=binary)
    try:
        if kind == "other prefix":
            wait_until(lambda: pid_written(elsewhere))
            (prefix / "nginx.pid").write_text(f"{process.pid}\n")  # a stale pid file
        elif kind != "not in the pid file":
            wait_until(lambda: pid_written(prefix))
        else:
            wait_until(lambda: bool(reaper.children(process.pid)))
        reloaded = anyio.run(reload_master, process.pid, prefix, 0.2, 0.2)
        if kind == "our master":
            assert reloaded
            assert process.wait(10) == -signal.SIGHUP
        else:
            assert not reloaded
            assert process.poll() is None
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
