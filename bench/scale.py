"""Benchmark one dokuend with many apps (issue 17): 200 apps of 2 processes each.

Run it from the repository root::

    python bench/scale.py              # 200 apps (about 3 minutes on 2 cores)
    python bench/scale.py --apps 20    # a smoke run

It starts a fresh dokuend (no nginx) in a temporary directory and deploys APPS apps, each
a Procfile of ``web: busybox httpd`` (a static page: the lightest HTTP server at hand) and
``worker: sleep``. It measures:

1. the time of one ``dokuenctl deploy`` while it is the only app, then while every other
   app runs (median of 3 each): the ratio says whether the others slow a deploy down;
2. the daemon's RSS with every app running, and per process;
3. ``ps`` latency: the request ``dokuenctl ps --json`` sends, for one app and for every
   app, timed on the control socket (median of 20), and ``dokuenctl ps APP`` as a command;
4. the restart of the daemon: SIGTERM, then a new dokuend, until every web process
   answers HTTP again (from the new dokuend's start, and from the SIGTERM), and where that
   time went, from the new dokuend's events.

dokuend is stopped by its pid. Results go to ``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import ROOT, BenchError, Dokuend, wait_for
from launcher import free_port_range

RESULTS = ROOT / "bench" / "results" / "scale.json"
PROCFILE = "web: exec busybox httpd -f -p 127.0.0.1:$PORT -h .\nworker: exec sleep 100000\n"


def request(daemon: Dokuend, command: str, args: dict[str, Any]) -> Any:
    """One request on the control socket, as dokuenctl sends it, without its start-up."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(daemon.home / "dokuend.sock"))
        client.sendall(json.dumps({"command": command, "args": args}).encode() + b"\n")
        with client.makefile("rb") as replies:
            for line in replies:
                message = json.loads(line)
                if "output" in message:
                    continue
                if message.get("ok"):
                    return message.get("result")
                raise BenchError(f"dokuend: {message.get('error')}")
    raise BenchError("dokuend closed the control connection without an answer")


def timed(action: Any, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return times


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return sock.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


def web_ports(daemon: Dokuend) -> dict[str, int]:
    rows = request(daemon, "ps", {})
    return {
        row["app"]: row["port"]
        for row in rows
        if row.get("type") == "web" and row["state"] == "running" and row.get("port")
    }


def all_serving(daemon: Dokuend, apps: int) -> bool:
    try:
        ports = web_ports(daemon)
    except (OSError, BenchError):
        return False
    return len(ports) == apps and all(answers(port) for port in ports.values())


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for {pid}")


def restart_profile(log: Path, launched: float) -> dict[str, float]:
    """Where a restart's time went, from the new dokuend's own events (its stderr, one JSON
    object a line, stamped in UTC): seconds from its launch to the first event (the
    interpreter and the imports), to the first and the last process started, the last one
    healthy, and ``daemon.ready`` (every app restored)."""
    marks: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
            stamp = datetime.fromisoformat(event["timestamp"]).timestamp() - launched
        except (ValueError, KeyError, TypeError):
            continue
        name = event.get("event")
        marks.setdefault("first_event_s", stamp)
        if name == "process.started":
            marks.setdefault("first_started_s", stamp)
            marks["last_started_s"] = stamp
        elif name == "process.healthy":
            marks.setdefault("first_healthy_s", stamp)
            marks["last_healthy_s"] = stamp
        elif name == "daemon.ready":
            marks["ready_s"] = stamp
    return {key: round(value, 2) for key, value in marks.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--apps", type=int, default=200)
    args = parser.parse_args()
    if shutil.which("busybox") is None:
        raise BenchError("busybox is not installed (apt-get install busybox)")
    tmp = Path(tempfile.mkdtemp(prefix="dokuen-scale-bench-"))
    source = tmp / "app"
    source.mkdir()
    (source / "Procfile").write_text(PROCFILE)
    (source / "index.html").write_text("ok\n")
    settings = {"DOKUEN_PORT_RANGE": free_port_range(), "DOKUEN_NGINX": "off"}
    daemon = Dokuend(tmp / "home", settings)
    names = [f"s{n:03d}" for n in range(args.apps)]
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "apps": args.apps,
        "processes": 2 * args.apps,
        "load_average_before": os.getloadavg(),
    }
    try:
        daemon.start()
        first = names[0]
        daemon.ctl("apps:create", first)
        daemon.ctl("deploy", first, str(source))
        alone = timed(lambda: daemon.ctl("deploy", first, str(source)), 3)
        print(f"(1) deploy, the only app: median {statistics.median(alone):.3f} s")

        def create(name: str) -> None:
            daemon.ctl("apps:create", name)
            daemon.ctl("deploy", name, str(source))

        began = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(create, names[1:]))
        results["deploy_all_s"] = round(time.perf_counter() - began, 1)
        wait_for(lambda: all_serving(daemon, args.apps), 120, "every app to answer")
        print(f"    {args.apps - 1} more apps deployed in {results['deploy_all_s']} s")
        among = timed(lambda: daemon.ctl("deploy", first, str(source)), 3)
        print(
            f"(1) deploy while {args.apps - 1} others run: median {statistics.median(among):.3f}"
            f" s ({statistics.median(among) / statistics.median(alone):.2f}x the lone deploy)"
        )
        results["deploy_alone_s"] = alone
        results["deploy_among_s"] = among
        results["deploy_ratio"] = round(statistics.median(among) / statistics.median(alone), 3)

        assert daemon.proc is not None
        time.sleep(2)
        rss = rss_mib(daemon.proc.pid)
        results["daemon_rss_mib"] = round(rss, 1)
        results["daemon_rss_kib_per_process"] = round(rss * 1024 / (2 * args.apps), 1)
        print(f"(2) daemon RSS with {2 * args.apps} processes: {rss:.1f} MiB")

        one = timed(lambda: request(daemon, "ps", {"app": first}), 20)
        every = timed(lambda: request(daemon, "ps", {}), 20)
        command = timed(lambda: daemon.ctl("ps", first), 5)
        results["ps_one_app_ms"] = round(statistics.median(one) * 1000, 2)
        results["ps_all_apps_ms"] = round(statistics.median(every) * 1000, 2)
        results["ps_command_ms"] = round(statistics.median(command) * 1000, 1)
        print(
            f"(3) ps on the socket: one app {results['ps_one_app_ms']} ms, all "
            f"{2 * args.apps} processes {results['ps_all_apps_ms']} ms; "
            f"`dokuenctl ps {first}` {results['ps_command_ms']} ms"
        )

        stopping = time.perf_counter()
        daemon.stop()
        stopped, launched = time.perf_counter(), time.time()
        daemon.start()
        # Its log says when every app is restored; only then `ps` (400 processes' rows and
        # cgroup counters: 45 ms of the daemon's loop each) and the HTTP probes. Polling
        # `ps` all along took a quarter of the loop away from the restore it measures.
        log = tmp / "dokuend.out"
        wait_for(lambda: b'"daemon.ready"' in log.read_bytes(), 300, "daemon.ready", 0.02)
        wait_for(lambda: all_serving(daemon, args.apps), 300, "every app to answer", 0.05)
        serving = time.perf_counter()
        profile = restart_profile(log, launched)
        results["restart_profile"] = profile
        results["restart_stop_s"] = round(stopped - stopping, 2)
        results["restart_to_all_serving_s"] = round(serving - stopped, 2)
        results["sigterm_to_all_serving_s"] = round(serving - stopping, 2)
        print(
            f"(4) restart: stop {results['restart_stop_s']} s, then new dokuend to all "
            f"{args.apps} serving {results['restart_to_all_serving_s']} s "
            f"({results['sigterm_to_all_serving_s']} s from SIGTERM)"
        )
        print(
            "    from the new dokuend's launch, s: "
            + ", ".join(f"{key[:-2]} {value}" for key, value in profile.items())
        )
    finally:
        daemon.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_average_after"] = os.getloadavg()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    results["commit"] = commit.stdout.strip()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
