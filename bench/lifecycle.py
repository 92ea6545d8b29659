"""Benchmark dokuend's own lifecycle with apps serving (issue 13).

Run it from the repository root::

    python bench/lifecycle.py            # 5 rounds of each fault
    python bench/lifecycle.py --rounds 1 # a smoke run

It starts a fresh dokuend (DOKUEN_NGINX=managed) in a temporary directory and deploys an
app with a web process and a worker that prints numbered lines, then, under continuous
HTTP load through nginx, measures each of:

1. ``kill -9`` of dokuend, then a new dokuend: seconds from the kill until the new one
   answers with every process running (adopted), and the failed requests meanwhile;
2. a clean restart (SIGTERM, start): seconds until the app answers 200 through nginx
   again, and how many answers were 404 meanwhile;
3. ``kill -9`` of the nginx master: seconds until a new master answers 200;
4. ``dokuenctl daemon:reload``: seconds the command takes (until the new image answers),
   the failed requests during it, and the worker's lines lost or doubled in the log.

dokuend is stopped with SIGTERM at the end. Results go to ``bench/results/lifecycle.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness import ROOT, BenchError, Dokuend, free_port, wait_for

RESULTS = ROOT / "bench" / "results" / "lifecycle.json"
APP = "bench"
HOST = f"{APP}.localhost"
COUNTER = (
    "import time\nn = 0\nwhile True:\n    n += 1\n"
    "    print(f'tick {n}', flush=True)\n    time.sleep(0.005)\n"
)
PROCFILE = "web: exec python3 -m http.server $PORT --bind 127.0.0.1\nclock: python3 -u counter.py\n"


def get(port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/", headers={"Host": HOST})
        response = connection.getresponse()
        response.read()
        return str(response.status)
    except (OSError, http.client.HTTPException) as exc:  # a connection cut mid-answer too
        return type(exc).__name__
    finally:
        connection.close()


class Load(threading.Thread):
    """GET / through nginx in a loop; counts each answer's status (or error)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.results: Counter[str] = Counter()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.results[get(self.port)] += 1

    def take(self) -> Counter[str]:
        """The counts so far, and start counting afresh."""
        taken, self.results = self.results, Counter()
        return taken


def failed(results: Counter[str]) -> int:
    return sum(n for status, n in results.items() if status != "200")


def ticks(log: str) -> list[int]:
    return [int(n) for n in re.findall(rf"{APP}\[clock\.1\]: tick (\d+)$", log, re.M)]


def lines_lost_and_doubled(log: str) -> tuple[int, int]:
    """In a stretch of the log where one worker ran throughout: the numbers missing between
    its first and last line, and the lines written more than once."""
    seen = ticks(log)
    counts = Counter(seen)
    missing = set(range(min(seen), max(seen) + 1)) - set(seen)
    return len(missing), sum(c - 1 for c in counts.values())


def running(daemon: Dokuend) -> bool:
    result = daemon.ctl("ps", APP, "--json", check=False)
    if result.returncode != 0:
        return False
    rows = json.loads(result.stdout)
    return len(rows) == 2 and all(row["state"] == "running" for row in rows)


def nginx_pid(daemon: Dokuend) -> int | None:
    result = daemon.ctl("status", "--json", check=False)
    return json.loads(result.stdout)["nginx"]["pid"] if result.returncode == 0 else None


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    port = free_port()
    top = Path(tempfile.mkdtemp(prefix="dokuen-bench-lifecycle-"))
    daemon = Dokuend(
        top / "home",
        {
            "DOKUEN_NGINX": "managed",
            "DOKUEN_HTTP_PORT": str(port),
            "DOKUEN_HTTP_ADDR": "127.0.0.1",
            "DOKUEN_PORT_RANGE": f"{(first := free_port())}-{first + 40}",
        },
    )
    source = top / "src"
    source.mkdir()
    (source / "Procfile").write_text(PROCFILE)
    (source / "counter.py").write_text(COUNTER)
    (source / "requirements.txt").write_text("")
    daemon.start()
    out: dict[str, Any] = {"rounds": rounds}
    try:
        daemon.ctl("apps:create", APP)
        daemon.ctl("deploy", APP, str(source))
        daemon.ctl("ps:scale", APP, "clock=1")
        wait_for(lambda: running(daemon) and get(port) == "200", 60, "the app through nginx")
        load = Load(port)
        load.start()
        assert daemon.proc is not None
        kill, kill_failed = [], 0
        for _ in range(rounds):
            load.take()
            began = time.monotonic()
            os.kill(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait()
            daemon.start()
            wait_for(lambda: running(daemon), 60, "the adopted processes", 0.01)
            kill.append(time.monotonic() - began)
            kill_failed += failed(load.take())
        out["kill -9 of dokuend to all running again (s)"] = summary(kill)
        out["kill -9 of dokuend: failed requests"] = kill_failed
        restart, restart_404, restart_failed = [], 0, 0
        for _ in range(rounds):
            load.take()
            began = time.monotonic()
            daemon.stop()
            daemon.start()
            wait_for(lambda: get(port) == "200", 60, "the app through nginx", 0.01)
            restart.append(time.monotonic() - began)
            results = load.take()
            restart_404 += results["404"]
            restart_failed += failed(results)
        out["clean restart to serving (s)"] = summary(restart)
        out["clean restart: 404 answers"] = restart_404
        out["clean restart: other failed requests (nginx down while dokuend stops)"] = (
            restart_failed - restart_404
        )
        heal = []
        for _ in range(rounds):
            # A master that served a second restarts at once; one that dies sooner is a
            # crash loop and backs off (0.5 s, 1 s, 2 s, ...): this measures the former.
            time.sleep(1.5)
            master = nginx_pid(daemon)
            assert master is not None
            began = time.monotonic()
            os.kill(master, signal.SIGKILL)

            def healed(old: int = master) -> bool:
                return nginx_pid(daemon) not in (None, old) and get(port) == "200"

            wait_for(healed, 60, "a new nginx master", 0.01)
            heal.append(time.monotonic() - began)
        out["nginx master kill -9 to serving again (s)"] = summary(heal)
        reload, reload_failed = [], 0
        log_file = daemon.home / "logs" / "dokuen.log"
        offset = log_file.stat().st_size  # from here on one worker runs throughout
        for _ in range(rounds):
            load.take()
            time.sleep(0.2)
            reload.append(daemon.timed("daemon:reload"))
            time.sleep(0.2)
            reload_failed += failed(load.take())
        time.sleep(0.5)
        with log_file.open() as log:
            log.seek(offset)
            lost, doubled = lines_lost_and_doubled(log.read())
        out["daemon:reload (s)"] = summary(reload)
        out["daemon:reload: failed requests"] = reload_failed
        out["worker lines lost / doubled (all rounds)"] = [lost, doubled]
        load.halt.set()
        load.join(10)
    finally:
        daemon.stop()
    out["machine"] = f"{os.cpu_count()} cpus, python {sys.version.split()[0]}"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    for key, value in out.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        sys.exit(f"error: {exc}")
