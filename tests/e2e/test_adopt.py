"""dokuend's own lifecycle: a ``kill -9`` of the daemon, a restart and a re-exec in place
(``daemon:reload``) never take the apps down. Real dokuend, real nginx, real processes."""

import http.client
import json
import os
import re
import signal
import subprocess
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


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Dokuen, int]]:
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
        for process in psutil.process_iter(["cmdline"]):  # a failed test's leftovers
            if str(daemon.home) in " ".join(process.info["cmdline"] or []):
                process.kill()


def test_a_killed_dokuend_is_replaced_by_one_that_adopts_everything(
    served: tuple[Dokuen, int],
) -> None:
    """kill -9 of dokuend, lines written while none runs, a formation changed meanwhile:
    the next dokuend adopts web.1, clock.1 and nginx (same pids, same ports, serving all
    along), stops clock.2 (no longer in the formation) and loses no line."""
    daemon, port = served
    before, master = pids(daemon), nginx_pid(daemon)
    assert daemon.process is not None and master is not None
    load = Load(port, "blog.localhost")
    load.start()
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait()
    daemon.process = None
    formation = daemon.home / "apps" / "blog" / "formation.json"
    formation.write_text(json.dumps({"web": 1, "clock": 1}))
    written_while_dead = len(ticks(daemon.log(), "clock.1"))
    time.sleep(1.0)  # the apps serve and write with no daemon at all
    assert psutil.pid_exists(before["web.1"]) and psutil.pid_exists(master)
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
    last = wait_for(
        lambda: (n := assert_every_tick_once(daemon.log(), "clock.1")) > written_while_dead + 150
        and n,
        "clock.1's lines from while no daemon ran",
    )
    assert last
    log = daemon.log()
    assert "blog[dokuen]: web.1 adopted, pid" in log
    assert "nginx[dokuen]: master adopted" in log
    # Adopted processes are supervised as before: one that exits is restarted.
    os.kill(after["clock.1"], signal.SIGKILL)
    wait_for(
        lambda: (p := pids(daemon).get("clock.1")) and p != after["clock.1"] and p,
        "clock.1 restarted after its exit",
    )
    assert daemon.terminate() == 0
    assert not psutil.pid_exists(before["web.1"]) or (
        psutil.Process(before["web.1"]).status() == psutil.STATUS_ZOMBIE
    )
