"""What one request costs nginx, counted rather than timed (issue 17's proxy target).

Run it from the repository root, as root with valgrind and strace installed::

    python bench/proxy_cost.py                 # 2,000 requests through each config
    python bench/proxy_cost.py --requests 500 --variants no_router,bare

requests/s through nginx on a 2-core machine swings by a third from one 3-second run to the
next (bench/proxy.py), because the client, nginx's workers and the app share the two cores.
The config decides how much work nginx does for each request, and that can be counted
exactly. This starts a fresh dokuend with the app deployed (as bench/proxy.py does), then
runs each config as one nginx process (``master_process off``: the one process does all the
work) and sends it the same keep-alive requests twice:

1. under valgrind's callgrind: the instructions nginx runs in user space per request, the
   same to a few in a thousand from run to run;
2. under ``strace -c``: the system calls it makes per request (the kernel's share of its
   CPU, which callgrind does not see).

The configs: the hand-written one without an access log (issue 17's yardstick), the same with
a buffered access log, dokuend's own (the files it wrote, as bench/proxy.py copies them), and
any ``--variants`` of it. Results go to ``bench/results/proxy_cost.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness import ROOT, BenchError, wait_for
from proxy import (
    HOST,
    VARIANTS,
    HandNginx,
    chosen_variants,
    deployed,
    machine,
    port_free,
    serving,
    variant_conf,
)

RESULTS = ROOT / "bench" / "results" / "proxy_cost.json"
WARM_UP = 200  # requests before counting: nginx's first ones allocate its pools


def requests(port: int, count: int) -> None:
    """``count`` GETs on keep-alive connections (a new one when nginx closes one)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(count):
            conn.request("GET", "/", headers={"Host": HOST})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise BenchError(f"port {port} answered {response.status}")
            if response.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    finally:
        conn.close()


def one_process(conf: str) -> str:
    """The config run by one process that does every request itself (one worker: with
    ``reuseport`` each worker has a socket of its own, which no one else would accept on)."""
    conf = conf.replace("master_process on;", "master_process off;")
    return conf.replace("worker_processes auto;", "worker_processes 1;")


@contextlib.contextmanager
def nginx_under(tool: list[str], conf: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """nginx with ``conf`` under ``tool`` (valgrind; none: nginx itself), answering on
    ``port``."""
    command = [*tool, "nginx", "-p", str(conf.parent), "-c", str(conf)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: serving(port, HOST), 60, f"{' '.join(command[:2])} on port {port}")
        yield process
    finally:
        if process.poll() is None:
            process.terminate()  # nginx stops (under valgrind, which passes it on)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def instructions(conf: Path, port: int, count: int) -> int:
    """User-space instructions nginx runs for ``count`` requests (callgrind's Ir)."""
    out = conf.with_name("callgrind.out")
    for old in conf.parent.glob("callgrind.out*"):
        old.unlink()
    tool = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    with nginx_under(tool, conf, port) as process:
        requests(port, WARM_UP)
        control = ["callgrind_control"]
        subprocess.run([*control, "-z", str(process.pid)], check=True, capture_output=True)
        requests(port, count)
        subprocess.run([*control, "-d", str(process.pid)], check=True, capture_output=True)
    dump = conf.with_name("callgrind.out.1")  # the -d dump: just the counted requests
    match = re.search(r"^summary: (\d+)", dump.read_text(), re.MULTILINE)
    if match is None:
        raise BenchError(f"no summary in {dump}")
    return int(match[1])


def system_calls(conf: Path, port: int, count: int) -> dict[str, int]:
    """How many of each system call nginx makes for ``count`` requests (``strace -c``)."""
    summary = conf.with_name("strace.txt")
    with nginx_under([], conf, port) as server:
        requests(port, WARM_UP)
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-o", str(summary), "-p", str(server.pid)],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # attached
        requests(port, count)
        tracer.send_signal(2)  # SIGINT: detach and write the summary
        tracer.wait(30)
    calls: dict[str, int] = {}
    for line in summary.read_text().splitlines():
        words = line.split()
        if len(words) >= 5 and words[3].isdigit() and words[-1] != "total":
            calls[words[-1]] = int(words[3])
    return calls


def configs(home: Path, tmp: Path, app_port: int, http_port: int, knobs: list[str]) -> list[Any]:
    """(name, config file, port) for the yardsticks, dokuend's config and its variants."""
    port = http_port + 10
    made = []
    for name, log in (("hand_nolog", False), ("hand", True)):
        hand = HandNginx(tmp / name, port, app_port, log=log)
        made.append((name, hand.conf, port))
        port += 1
    for knob in ["copy", *knobs]:
        prefix = tmp / f"ours-{knob}"
        conf = prefix / "nginx.conf"
        conf.write_text(variant_conf(home, prefix, port, http_port, knob))
        made.append(("ours" if knob == "copy" else f"ours+{knob}", conf, port))
        port += 1
    for _name, conf, port in made:
        if not port_free(port):
            raise BenchError(f"port {port} is in use")
        conf.write_text(one_process(conf.read_text()))
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--http-port", type=int, default=21500)
    parser.add_argument("--port-range", default="21000-21099")
    parser.add_argument("--requests", type=int, default=2000, help="counted, per config")
    parser.add_argument(
        "--variants",
        default="no_router,bare",
        help=f"dokuend's config with one knob changed (some of {','.join(VARIANTS)})",
    )
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "strace", "nginx"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (apt-get install valgrind strace nginx)")
    knobs = [k for k in chosen_variants(args.variants) if k != "copy"]
    results: dict[str, Any] = {"machine": machine(), "requests": args.requests, "configs": {}}
    with deployed(args.http_port, args.port_range, results) as (daemon, tmp, app_port):
        made = configs(daemon.home, tmp, app_port, args.http_port, knobs)
        print(f"nginx's work per request, {args.requests:,} keep-alive requests per config")
        print(f"  {'config':<16} {'instructions':>12} {'÷ hand_nolog':>13}  system calls")
        base = None
        for name, conf, port in made:
            count = instructions(conf, port, args.requests) / args.requests
            calls = system_calls(conf, port, args.requests)
            per = {c: n / args.requests for c, n in calls.items() if n >= args.requests / 10}
            base = base or count
            results["configs"][name] = {"instructions": round(count), "calls": per}
            shown = ", ".join(f"{c} {n:.2f}" for c, n in sorted(per.items()))
            print(f"  {name:<16} {count:>12,.0f} {count / base:>12.2f}x  {shown}")
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
