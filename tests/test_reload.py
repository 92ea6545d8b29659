"""reload_master against real processes standing in for an nginx master: the old workers
are told to quit only once new ones run, and never when the master did not reload."""

import os
import signal
import subprocess
from collections.abc import Iterator

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
