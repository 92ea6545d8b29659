"""Many parked slots (supervise/parking.py) through a real dokuend's lifecycle: a re-exec
(``daemon:reload``) and a ``kill -9`` hand sixteen idle workers over to the next image or
dokuend, which supervises every one (same pids, an exit restarted) and reads every line
(none doubled; a ``kill -9`` loses at most what the dead one had read and not written);
then a scale-down and a restart racing the wake-up of processes that just exited, and an
app destroyed with its slots parked: nothing is left running, the daemon answers."""

import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import BIN, Dokuen, free_port_block, wait_for, write_app

COUNTER = """\
import subprocess
import time
n = 0
while True:
    n += 1
    print(f"tick {n}", flush=True)
    time.sleep(0.05)
"""
WORKERS = 16


def ticks(log: str, dyno: str) -> list[int]:
    return [int(n) for n in re.findall(rf"herd\[{re.escape(dyno)}\]: tick (\d+)$", log, re.M)]


def pids(daemon: Dokuen) -> dict[str, int]:
    return {row["name"]: row["pid"] for row in daemon.ps("herd") if row["pid"]}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def more_lines(daemon: Dokuen, than: dict[str, int]) -> None:
    """Every worker wrote lines after ``than`` (its last number then)."""

    def each() -> bool:
        log = daemon.log()
        return all(max(ticks(log, dyno), default=0) > last + 5 for dyno, last in than.items())

    wait_for(each, "lines from every worker", timeout=30)


def last_ticks(daemon: Dokuen) -> dict[str, int]:
    log = daemon.log()
    return {f"clock.{n}": max(ticks(log, f"clock.{n}"), default=0) for n in range(1, 1 + WORKERS)}


def test_parked_workers_survive_reexec_kill_9_scale_restart_and_destroy(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    source = write_app(tmp_path / "src", "clock: python3 -u counter.py\n", {"counter.py": COUNTER})
    dokuen.deploy("herd", source)
    dokuen.ctl("ps:scale", "herd", f"clock={WORKERS}")
    wait_for(lambda: dokuen.running("herd", WORKERS), "sixteen workers", timeout=30)
    before = pids(dokuen)
    more_lines(dokuen, dict.fromkeys(before, 0))

    dokuen.ctl("daemon:reload", "--timeout", "60")  # the same process, a new image
    assert pids(dokuen) == before
    more_lines(dokuen, last_ticks(dokuen))
    log = dokuen.log()
    for dyno in before:  # a re-exec: every line once, none lost
        seen = ticks(log, dyno)
        assert sorted(seen) == list(range(1, max(seen) + 1)), dyno

    assert dokuen.process is not None
    at_kill = last_ticks(dokuen)
    dokuen.process.send_signal(signal.SIGKILL)
    dokuen.process.wait()
    dokuen.process = None
    time.sleep(0.5)  # the workers write with no daemon: their FIFOs hold the lines
    dokuen.start()
    wait_for(lambda: pids(dokuen) == before or None, "every worker adopted, same pids")
    more_lines(dokuen, last_ticks(dokuen))
    log = dokuen.log()
    for dyno in before:
        seen = ticks(log, dyno)
        assert len(seen) == len(set(seen)), f"{dyno}: a line twice"
        missing = set(range(1, max(seen) + 1)) - set(seen)
        # what the killed dokuend had read and not yet written died with it: a few lines
        assert all(at_kill[dyno] < n <= at_kill[dyno] + 20 for n in missing), (dyno, missing)

    # Still supervised: an exit of an adopted, parked worker is seen and restarted.
    os.kill(before["clock.1"], signal.SIGKILL)
    wait_for(
        lambda: pids(dokuen).get("clock.1") not in (None, before["clock.1"]), "clock.1 restarted"
    )

    # A scale-down racing the wake-up of workers that exited a moment ago.
    now = pids(dokuen)
    for n in range(5, WORKERS + 1):
        os.kill(now[f"clock.{n}"], signal.SIGKILL)
    dokuen.ctl("ps:scale", "herd", "clock=4")
    wait_for(lambda: len(dokuen.ps("herd")) == 4 or None, "four workers")
    time.sleep(0.5)  # longer than the first backoff: no restart of a removed one comes
    assert sorted(pids(dokuen)) == [f"clock.{n}" for n in range(1, 5)]
    removed = [now[f"clock.{n}"] for n in range(5, WORKERS + 1)]
    wait_for(lambda: not [pid for pid in removed if alive(pid)] or None, "the removed gone")

    # A restart racing the wake-up of one that exited a moment ago.
    four = pids(dokuen)
    os.kill(four["clock.2"], signal.SIGKILL)
    dokuen.ctl("restart", "herd")
    wait_for(lambda: dokuen.running("herd", 4), "four workers again")
    again = pids(dokuen)
    assert not set(again.values()) & set(four.values())
    assert not [pid for pid in four.values() if alive(pid)]
    counts = Counter(row["name"] for row in dokuen.ps("herd"))
    assert set(counts.values()) == {1}

    # Destroyed with its slots parked: every process ends, the daemon goes on.
    dokuen.ctl("apps:destroy", "herd", "--confirm", "herd")
    wait_for(lambda: not [pid for pid in again.values() if alive(pid)] or None, "all ended")
    assert dokuen.ctl("status").returncode == 0
    assert dokuen.ps() == []
    assert "Traceback" not in dokuen.daemon_stderr()


def test_exits_during_a_reexec_are_seen_and_a_crash_loop_goes_on(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    """A parked worker killed while ``daemon:reload`` runs (the old image frozen, the new
    one not yet adopting), and a worker in a crash loop (parked between its exits): the
    new image restarts the first and carries on the second's backoff; a shutdown then
    stops every parked worker."""
    procfile = 'clock: python3 -u counter.py\ncrash: sh -c "echo boom; sleep 0.2; exit 1"\n'
    dokuen.deploy("herd", write_app(tmp_path / "src", procfile, {"counter.py": COUNTER}))
    dokuen.ctl("ps:scale", "herd", "clock=4", "crash=1")
    wait_for(lambda: len(pids(dokuen)) == 5 or None, "five processes")
    wait_for(lambda: "crash.1 exited with code 1, restarting" in dokuen.log(), "a crash")
    before = pids(dokuen)
    reload = subprocess.Popen(
        [str(BIN / "dokuenctl"), "daemon:reload", "--timeout", "60"],
        env=dokuen.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.05)
    os.kill(before["clock.2"], signal.SIGKILL)  # while the new program is checked
    wait_for(lambda: '"daemon.reexec"' in dokuen.daemon_stderr(), "the exec", timeout=60)
    os.kill(before["clock.3"], signal.SIGKILL)  # while the new image starts
    _out, err = reload.communicate(timeout=90)
    assert reload.returncode == 0, err
    for name in ("clock.2", "clock.3"):

        def again(name: str = name) -> bool:
            return pids(dokuen).get(name) not in (None, before[name])

        wait_for(again, f"{name} again")
        assert not alive(before[name])
    for name in ("clock.2", "clock.3"):  # each exit seen with its status, by one image
        assert dokuen.log().count(f"{name} killed by SIGKILL, restarting") == 1
    for name in ("clock.1", "clock.4"):
        assert pids(dokuen)[name] == before[name]
    crashes = dokuen.log().count("crash.1 exited with code 1, restarting")
    wait_for(
        lambda: dokuen.log().count("crash.1 exited with code 1, restarting") > crashes + 1,
        "the crash loop after the re-exec",
    )
    assert "Traceback" not in dokuen.daemon_stderr()
    # A shutdown with the workers parked: each becomes a task again and is stopped.
    last = pids(dokuen)
    assert dokuen.terminate() == 0
    assert not [pid for pid in last.values() if alive(pid)]


@pytest.fixture
def roomy(tmp_path: Path) -> Iterator[Dokuen]:
    """A dokuend with ports for eighty processes."""
    daemon = Dokuen(home=tmp_path / "home", ports=free_port_block(80))
    daemon.start()
    try:
        yield daemon
    finally:
        if daemon.process is not None:
            daemon.terminate()


def test_sixty_parked_workers_killed_at_once_are_all_restarted_and_nothing_leaks(
    roomy: Dokuen, tmp_path: Path
) -> None:
    """Sixty idle workers of a real dokuend, killed in the same instant: each restarted
    once (a new pid, running), and the daemon holds as many descriptors after as before."""
    dokuen, count = roomy, 60
    dokuen.deploy("herd", write_app(tmp_path / "src", "idle: exec sleep 100000\n"))
    dokuen.ctl("ps:scale", "herd", f"idle={count}")
    wait_for(lambda: dokuen.running("herd", count), "sixty workers", timeout=60)
    assert dokuen.process is not None
    daemon = psutil.Process(dokuen.process.pid)
    fds, threads = daemon.num_fds(), daemon.num_threads()
    before = pids(dokuen)
    for pid in before.values():
        os.kill(pid, signal.SIGKILL)

    def all_again() -> bool:
        now = pids(dokuen)
        fresh = len(now) == count and not set(now.values()) & set(before.values())
        return fresh and dokuen.running("herd", count) is not None

    wait_for(all_again, "sixty new workers", timeout=60)
    assert not [pid for pid in before.values() if alive(pid)]
    assert dokuen.log().count("killed by SIGKILL, restarting") == count
    wait_for(lambda: daemon.num_fds() == fds or None, "the descriptors of before")
    assert daemon.num_threads() <= threads + 1  # at most the log writer's, started lazily
