"""reload_master against real processes standing in for an nginx master: the old workers
are told to quit only once new ones run, and never when the master did not reload."""

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
# A master that starts a new worker on SIGHUP and reaps whatever exits.
RELOADS = f'trap "{WORKER}" HUP; {WORKER} while :; do wait; done'
# A master that ignores SIGHUP: its config was never loaded.
IGNORES = f"trap '' HUP; {WORKER} while :; do wait; done"


@pytest.fixture
def master(request: pytest.FixtureRequest) -> Iterator[int]:
    process = subprocess.Popen(["sh", "-c", request.param], start_new_session=True)
    try:
        wait_until(lambda: len(reaper.children(process.pid)) == 1)
        yield process.pid
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


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
def test_the_old_workers_quit_once_new_ones_run(master: int) -> None:
    (old,) = reaper.children(master)
    anyio.run(reload_master, master, 5.0, 5.0)
    assert not running(old)  # SIGQUIT from reload_master: the stand-in has no 100 ms timer
    new = reaper.children(master) - {old}
    assert len(new) == 1
    assert running(new.pop())


@pytest.mark.parametrize("master", [IGNORES], indirect=True)
def test_no_new_workers_leaves_the_old_ones_serving(master: int) -> None:
    (old,) = reaper.children(master)
    anyio.run(reload_master, master, 0.3, 5.0)
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
script = f"trap '{trap}' HUP; {worker}; while :; do wait; done"
master = subprocess.Popen(["sh", "-c", script], cwd=here)
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
        await reload_master(master.pid, 5.0, 0.3)

anyio.run(main)
(bystander,) = bystanders
assert bystander.pid == old, (bystander.pid, old)
time.sleep(0.2)
print("bystander", bystander.poll())
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_a_pid_reused_after_the_old_worker_exited_is_never_signalled(tmp_path: Path) -> None:
    (tmp_path / "reuse.py").write_text(PID_REUSE)
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "reuse.py", tmp_path],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "bystander None"  # still running: no SIGQUIT
