"""Benchmark dokuend's managed nginx in front of an app (issue 3).

Run it from the repository root::

    python bench/proxy.py            # the full run (about 1.5 minutes)
    python bench/proxy.py --quick    # short durations, 3 restarts: a smoke run
    python bench/proxy.py --throughput-only --variants no_router,bare --seconds 3 --rounds 3

It starts a fresh dokuend (DOKUEN_NGINX=managed) in a temporary directory, deploys a tiny
asyncio HTTP app whose answers carry its pid, and measures:

1. requests/s and median latency through nginx against straight to the app's port, with
   the same client (wrk if it is installed, else a Python keep-alive client) and the same
   connections;
2. failed requests (non-200 answers and connection errors) under continuous load through
   nginx during back-to-back ``dokuenctl restart bench`` with web=2;
3. the time from issuing ``dokuenctl restart bench`` until answers come from the new
   processes (the first one, and the point after which no old process answers).

dokuend is stopped with SIGTERM to its pid. Results go to ``bench/results/proxy.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import ROOT, BenchError, Dokuend, wait_for

RESULTS = ROOT / "bench" / "results" / "proxy.json"
APP = "bench"
HOST = f"{APP}.localhost"

SERVER_PY = r"""
import asyncio, os

BODY = ("pid=%d ppid=%d\n" % (os.getpid(), os.getppid())).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
    + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
            if b"connection: close" in head.lower():
                break
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(os.environ["PORT"]))
    async with server:
        await server.serve_forever()


asyncio.run(main())
"""


KEEPALIVE_CLOSED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


# --- dokuend ------------------------------------------------------------------------------


def web(daemon: Dokuend) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(daemon.ctl("ps", APP, "--json").stdout)
    return [r for r in rows if str(r.get("name", "")).startswith("web")]


def get_once(port: int, host: str | None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": host} if host else {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def serving(port: int, host: str | None) -> bool:
    try:
        return get_once(port, host)[0] == 200
    except OSError:
        return False


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# --- workload 1: throughput ---------------------------------------------------------------


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise BenchError(f"cannot read wrk latency {text!r}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[match.group(2)]
    return float(match.group(1)) * scale


def run_wrk(port: int, host: str | None, conns: int, seconds: float) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    assert wrk is not None
    cmd = [wrk, f"-t{min(2, conns)}", f"-c{conns}", f"-d{seconds:g}s", "--latency"]
    if host:
        cmd += ["-H", f"Host: {host}"]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if rps is None or p50 is None or p99 is None or total is None:
        raise BenchError(f"cannot read wrk output:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "p50_ms": to_ms(p50.group(1)),
        "p99_ms": to_ms(p99.group(1)),
        "requests": int(total.group(1)),
        "errors": (int(bad.group(1)) if bad else 0)
        + (sum(int(g) for g in sock.groups()) if sock else 0),
    }


def run_python_client(port: int, host: str | None, conns: int, seconds: float) -> dict[str, Any]:
    """Fallback load generator: ``conns`` threads, one keep-alive connection each."""
    latencies: list[list[float]] = [[] for _ in range(conns)]
    errors = [0] * conns
    stop_at = time.monotonic() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        headers = {"Host": host} if host else {}
        while (start := time.monotonic()) < stop_at:
            try:
                conn.request("GET", "/", headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors[i] += 1
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                continue
            latencies[i].append(time.monotonic() - start)
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
    begin = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - begin
    flat = sorted(x for lst in latencies for x in lst)
    return {
        "rps": len(flat) / elapsed,
        "p50_ms": statistics.median(flat) * 1000,
        "p99_ms": flat[int(len(flat) * 0.99)] * 1000,
        "requests": len(flat),
        "errors": sum(errors),
    }


# --- workloads 2 and 3: restarts under load -----------------------------------------------


@dataclass
class Load:
    """Threads sending GETs through nginx on keep-alive connections, recording every answer."""

    port: int
    conns: int
    keepalive: bool = True
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: int = 0
    non_200: int = 0
    conn_errors: int = 0
    keepalive_closed: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    # (monotonic time the answer arrived, pid in the body), appended by every thread
    answers: list[tuple[float, int]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def worker(self) -> None:
        headers = {"Host": HOST} if self.keepalive else {"Host": HOST, "Connection": "close"}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        used = 0  # answers read on this connection
        retrying = False
        while not self.stop.is_set():
            try:
                conn.request("GET", "/", headers=headers)
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                now = time.monotonic()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                reused = used > 0
                used = 0
                with self.lock:
                    if reused and not retrying and isinstance(exc, KEEPALIVE_CLOSED):
                        # The server closed an idle keep-alive connection as the request
                        # went out (nginx's old worker after a reload). Clients retry such a
                        # request on a new connection (RFC 9110 9.2.2); so does this one.
                        self.keepalive_closed += 1
                        retrying = True
                        continue
                    self.conn_errors += 1
                    kind = type(exc).__name__
                    self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
                retrying = False
                continue
            retrying = False
            used += 1
            if not self.keepalive or resp.will_close:
                conn.close()
                used = 0
            with self.lock:
                if resp.status != 200:
                    self.non_200 += 1
                    kind = f"HTTP {resp.status}"
                    self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
                    continue
                self.ok += 1
                # A plain Procfile command runs as `exec COMMAND`: its pid is the one ps shows.
                match = re.match(r"pid=(\d+) ppid=(\d+)", body)
                if match:
                    self.answers.append((now, int(match.group(1))))
        conn.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        self.threads = [threading.Thread(target=self.worker) for _ in range(self.conns)]
        for t in self.threads:
            t.start()
        try:
            yield self
        finally:
            self.stop.set()
            for t in self.threads:
                t.join()

    def since(self, t0: float) -> list[tuple[float, int]]:
        with self.lock:
            return [a for a in self.answers if a[0] >= t0]


def load_stats(load: Load) -> dict[str, Any]:
    return {
        "connections": load.conns,
        "keepalive": load.keepalive,
        "requests_ok": load.ok,
        "non_200": load.non_200,
        "connection_errors": load.conn_errors,
        "failed": load.non_200 + load.conn_errors,
        "keepalive_closed_retried": load.keepalive_closed,
        "error_kinds": load.error_kinds,
    }


def restarts(daemon: Dokuend, http_port: int, count: int) -> dict[str, Any]:
    daemon.ctl("ps:scale", APP, "web=2")
    wait_for(
        lambda: len([r for r in web(daemon) if r.get("state") == "running"]) == 2,
        30,
        "web=2 to run",
    )
    # keep-alive connections (the timings come from these) and new-connection-per-request
    keep = Load(http_port, 3, keepalive=True)
    fresh = Load(http_port, 2, keepalive=False)
    first_new: list[float] = []
    all_new: list[float] = []
    command: list[float] = []
    with keep.running(), fresh.running():
        wait_for(
            lambda: len({p for _, p in keep.since(time.monotonic() - 0.5)}) == 2,
            30,
            "both web processes to answer through nginx",
        )
        for i in range(count):
            old = {int(r["pid"]) for r in web(daemon)}

            def done(old: set[int] = old) -> bool:
                rows = web(daemon)
                running = {int(r["pid"]) for r in rows if r.get("state") == "running"}
                return len(rows) == 2 and len(running) == 2 and running.isdisjoint(old)

            t0 = time.monotonic()
            daemon.ctl("restart", APP)
            t_cmd = time.monotonic()
            wait_for(done, 60, f"restart {i + 1} to finish")
            time.sleep(0.3)
            answers = keep.since(t0)
            new_times = [t for t, p in answers if p not in old]
            old_times = [t for t, p in answers if p in old]
            if not new_times:
                raise BenchError(f"restart {i + 1}: no answer from a new process")
            first_new.append(min(new_times) - t0)
            all_new.append((max(old_times) if old_times else min(new_times)) - t0)
            command.append(t_cmd - t0)
            print(
                f"  restart {i + 1}: command {command[-1] * 1000:.0f} ms, first new answer "
                f"{first_new[-1] * 1000:.0f} ms, last old answer {all_new[-1] * 1000:.0f} ms"
            )
    return {
        "restarts": count,
        "keepalive": load_stats(keep),
        "new_connection_per_request": load_stats(fresh),
        "failed": keep.non_200 + keep.conn_errors + fresh.non_200 + fresh.conn_errors,
        "failed_without_retry": keep.non_200
        + keep.conn_errors
        + keep.keepalive_closed
        + fresh.non_200
        + fresh.conn_errors,
        "first_new_answer_ms": [round(x * 1000, 1) for x in first_new],
        "last_old_answer_ms": [round(x * 1000, 1) for x in all_new],
        "command_ms": [round(x * 1000, 1) for x in command],
        "median_first_new_answer_ms": round(statistics.median(first_new) * 1000, 1),
        "median_last_old_answer_ms": round(statistics.median(all_new) * 1000, 1),
        "median_command_ms": round(statistics.median(command) * 1000, 1),
    }


# --- main ---------------------------------------------------------------------------------


HAND_CONF = """daemon off;
master_process on;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
    multi_accept on;
}}
http {{
    {access_log}
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    upstream app {{
        server 127.0.0.1:{app_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        server_name {host};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering on;
            proxy_buffers 16 16k;
        }}
    }}
}}
"""


class HandNginx:
    """The yardstick for dokuend's config: the nginx a sysadmin would write by hand for
    this one app on this machine (a worker per core, upstream keepalive, buffering,
    reuseport, and a buffered access log or none), its own master on ``port``."""

    def __init__(self, prefix: Path, port: int, app_port: int, log: bool = True) -> None:
        """``log``: the access log a sysadmin keeps, to a file (``combined buffer=64k
        flush=1s``); else none at all."""
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        access = f"access_log {prefix}/access.log combined buffer=64k flush=1s;"
        conf = HAND_CONF.format(
            access_log=access if log else "access_log off;",
            prefix=prefix,
            port=port,
            app_port=app_port,
            host=HOST,
        )
        self.conf.write_text(conf)
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.cwd = prefix

    def __enter__(self) -> HandNginx:
        self.proc = subprocess.Popen(
            ["nginx", "-c", str(self.conf), "-p", str(self.conf.parent)],
            cwd=self.cwd,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: serving(self.port, HOST), 20, "the hand-written nginx to answer")
        except BenchError:
            errors = self.conf.with_name("error.log")
            print(errors.read_text()[-2000:] if errors.exists() else "no error.log")
            raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()  # the master, by its pid: it stops its workers
            self.proc.wait(20)


# One knob at a time on a copy of dokuend's own config (``--variants``): each variant is
# its own nginx master on its own port, rendered from the files dokuend wrote.
VARIANTS = (
    "copy",
    "before",
    "workers1",
    "no_reuseport",
    "keepalive16",
    "no_router",
    "bare",
    # one of Heroku's headers left out (router lines kept): what each costs nginx
    "no_request_id",
    "no_forwarded",
    "no_request_start",
    "no_upgrade",
)
ONE_HEADER = {
    "no_request_id": "X-Request-Id",
    "no_forwarded": "X-Forwarded-Proto|X-Forwarded-Host",
    "no_request_start": "X-Request-Start",
}
# What dokuend's config gives an app beyond the hand-written one: Heroku's request headers
# and WebSocket upgrades (``bare`` leaves them out, with the router lines).
FEATURE_HEADERS = r"X-Request-Id|X-Forwarded-Proto|X-Forwarded-Host|X-Request-Start|Upgrade"


def variant_conf(home: Path, prefix: Path, port: int, http_port: int, knob: str) -> str:
    """dokuend's nginx.conf and the app's file, rewritten into one file under ``prefix``
    with ``knob`` changed (``copy``: nothing changed, the control; ``before``: the config
    dokuend rendered before issue 17's tuning)."""
    nginx = home / "nginx"
    main = (nginx / "nginx.conf").read_text()
    site = "".join(p.read_text() for p in sorted(nginx.glob("apps/*.conf")))
    for d in ("logs", "temp", "router"):  # its router lines: written, not read
        (prefix / d).mkdir(parents=True, exist_ok=True)
    main = main.replace(f"{nginx}/", f"{prefix}/")
    main = re.sub(r"\n\s*include \S+;\n", "\n" + site.replace("\n", "\n    ") + "\n", main)
    main = main.replace(f":{http_port}", f":{port}")
    if knob in ("before", "workers1"):
        main = main.replace("worker_processes auto;", "worker_processes 1;")
    if knob in ("before", "no_reuseport"):
        main = main.replace(" reuseport backlog=4096;", ";")
    if knob in ("before", "keepalive16"):
        main = main.replace("keepalive 64;", "keepalive 16;")
    if knob == "before":
        main = main.replace("worker_connections 4096;", "worker_connections 1024;")
    elif knob in ("no_router", "bare"):
        main = re.sub(r"access_log router/\S+ dokuen_router[^;]*;", "access_log off;", main)
    if knob == "bare":  # the hand-written config's headers only
        main = re.sub(rf"\n\s*proxy_set_header ({FEATURE_HEADERS}) [^\n]*;", "", main)
        main = main.replace("Connection $dokuen_connection;", 'Connection "";')
    if knob in ONE_HEADER:
        main = re.sub(rf"\n\s*proxy_set_header ({ONE_HEADER[knob]}) [^\n]*;", "", main)
    if knob == "no_upgrade":
        main = re.sub(r"\n\s*proxy_set_header Upgrade [^\n]*;", "", main)
        main = main.replace("Connection $dokuen_connection;", 'Connection "";')
    return main


def chosen_variants(given: str) -> list[str]:
    chosen = [knob for knob in given.split(",") if knob]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"error: no such variant: {', '.join(unknown)} (one of {VARIANTS})")
    return chosen


class VariantNginx(HandNginx):
    def __init__(self, home: Path, prefix: Path, port: int, http_port: int, knob: str) -> None:
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(variant_conf(home, prefix, port, http_port, knob))
        self.port = port
        self.proc = None
        self.cwd = prefix


YARDSTICKS = ("hand", "hand_nolog")  # the hand-written nginx, with its access log and without


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds these processes (all their threads) have used so far."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def workers(master: int) -> list[int]:
    """The nginx master's workers (its children)."""
    children = Path(f"/proc/{master}/task/{master}/children")
    with contextlib.suppress(OSError):
        return [int(pid) for pid in children.read_text().split()]
    return []


def throughput(
    daemon: Dokuend, tmp: Path, app_port: int, args: argparse.Namespace, load: Any, seconds: float
) -> dict[str, Any]:
    """Each target next to the two hand-written yardsticks (no access log, then a buffered
    access log), after them in even rounds and before them in odd ones: the load other work
    puts on the machine drifts within a round and hits the three alike. Also dokuend's
    and the nginx workers' CPU per request."""
    hand_port = args.hand_port
    assert daemon.proc is not None
    with contextlib.ExitStack() as stack:
        hand = stack.enter_context(HandNginx(tmp / "hand", hand_port, app_port))
        bare = stack.enter_context(
            HandNginx(tmp / "hand_nolog", hand_port + 1, app_port, log=False)
        )
        ours = int((daemon.home / "nginx" / "nginx.pid").read_text())
        masters = {"nginx": ours, "hand": hand.pid, "hand_nolog": bare.pid}
        ports = {"direct": app_port, "nginx": args.http_port, "hand": hand_port}
        ports.update(hand_nolog=hand_port + 1)
        for i, knob in enumerate(chosen_variants(args.variants)):
            port = hand_port + 3 + i
            variant = VariantNginx(daemon.home, tmp / knob, port, args.http_port, knob)
            masters[f"ours+{knob}"] = stack.enter_context(variant).pid
            ports[f"ours+{knob}"] = port
        for port in ports.values():
            load(port, HOST, args.connections, 1.0)  # warm-up
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ports}
        paired: dict[str, dict[str, list[float]]] = {y: {} for y in YARDSTICKS}

        def router_counts() -> tuple[int, int]:
            status = json.loads(daemon.ctl("status", "--json").stdout)
            return int(status["nginx"]["router"]["lines"]), int(status["nginx"]["router"]["turns"])

        def measure(name: str) -> dict[str, Any]:
            nginx = workers(masters[name]) if name in masters else []
            lines, turns = router_counts() if name == "nginx" else (0, 0)
            before = cpu_seconds([daemon.proc.pid]), cpu_seconds(nginx)  # type: ignore[union-attr]
            run: dict[str, Any] = load(
                ports[name], None if name == "direct" else HOST, args.connections, seconds
            )
            after = cpu_seconds([daemon.proc.pid]), cpu_seconds(nginx)  # type: ignore[union-attr]
            per = 1e6 / max(run["requests"], 1)
            run["dokuend_cpu_us"] = round((after[0] - before[0]) * per, 2)
            run["nginx_cpu_us"] = round((after[1] - before[1]) * per, 2) if nginx else None
            if name == "nginx":  # every request's router line reached the log: once nginx's
                deadline = time.monotonic() + 3  # workers flushed (100 ms) and dokuend read
                while router_counts()[0] - lines < run["requests"]:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                lines_after, turns_after = router_counts()
                run["lines_per_request"] = round((lines_after - lines) / run["requests"], 4)
                run["wakeups_per_request"] = round((turns_after - turns) / run["requests"], 4)
            runs[name].append(run)
            return run

        for round_ in range(args.rounds):
            for name in ports:
                if name in YARDSTICKS:
                    continue
                # Odd rounds measure the target first: a drift within a round favours
                # neither side.
                run = measure(name) if round_ % 2 else None
                sticks = {y: measure(y) for y in YARDSTICKS}
                run = run or measure(name)
                for y, stick in sticks.items():
                    paired[y].setdefault(name, []).append(run["rps"] / stick["rps"])
    print(
        "  target               req/s by round; ÷ hand-written with a buffered log | without a"
        " log, run just before (median); CPU per request (median): dokuend, nginx workers"
    )
    for name, each in runs.items():
        rates = ", ".join(f"{r['rps']:,.0f}" for r in each)
        ratios = " | ".join(
            ", ".join(f"{x:.2f}" for x in paired[y].get(name, []))
            + f" ({statistics.median(paired[y][name]):.2f})"
            for y in YARDSTICKS
            if name in paired[y]
        )
        cpu = statistics.median(r["dokuend_cpu_us"] for r in each)
        nginx_cpu = [r["nginx_cpu_us"] for r in each if r["nginx_cpu_us"] is not None]
        cpus = f"{cpu:.1f} us, " + (f"{statistics.median(nginx_cpu):.1f} us" if nginx_cpu else "-")
        print(f"  {name:<20} {rates}; {ratios or '(yardstick)'}; {cpus}")
    shares = ", ".join(f"{r['lines_per_request']:.2%}" for r in runs["nginx"])
    print(f"  router lines in the log per request through dokuend's nginx: {shares}")
    wakeups = ", ".join(f"{r['wakeups_per_request']:.3f}" for r in runs["nginx"])
    print(f"  dokuend's turns that read the router access log, per request: {wakeups}")
    best = {name: max(each, key=lambda r: r["rps"]) for name, each in runs.items()}
    strict = statistics.median(paired["hand_nolog"]["nginx"])
    lenient = statistics.median(paired["hand"]["nginx"])
    print(
        f"  dokuen's nginx ÷ hand-written, paired medians: {strict:.2f} against no access log "
        f"(the target: >= 0.90), {lenient:.2f} against a buffered access log; "
        f"÷ direct (best runs): {best['nginx']['rps'] / best['direct']['rps']:.2f}"
    )
    return {
        "seconds": seconds,
        "connections": args.connections,
        "runs": runs,
        "paired": paired,
        "vs_hand_nolog": round(strict, 3),
        "vs_hand": round(lenient, 3),
        "rps_ratio": round(best["nginx"]["rps"] / best["direct"]["rps"], 3),
    }


def ensure_wrk() -> None:
    """wrk from Debian when it is missing and this is root on a Debian-like machine."""
    if shutil.which("wrk") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    print("installing wrk (apt-get install wrk)", flush=True)

    def apt(*args: str) -> int:
        done = subprocess.run(["apt-get", *args], capture_output=True, check=False)
        return done.returncode

    if apt("install", "-y", "wrk") != 0:
        apt("update")
        apt("install", "-y", "wrk")


@contextlib.contextmanager
def deployed(
    http_port: int, port_range: str, results: dict[str, Any]
) -> Iterator[tuple[Dokuend, Path, int]]:
    """A fresh dokuend (managed nginx on ``http_port``) in a temporary directory, with the
    app deployed and answering through nginx: (the daemon, the directory, the app's port).
    The tail of dokuend's output goes into ``results``; everything goes at the end."""
    tmp = Path(tempfile.mkdtemp(prefix="dokuen-proxy-bench-"))
    app_dir = tmp / "app"
    app_dir.mkdir()
    (app_dir / "Procfile").write_text("web: python3 server.py\n")
    (app_dir / "server.py").write_text(SERVER_PY)
    settings = {
        "DOKUEN_PORT_RANGE": port_range,
        "DOKUEN_NGINX": "managed",
        "DOKUEN_HTTP_PORT": str(http_port),
        "DOKUEN_HTTP_ADDR": "127.0.0.1",
    }
    daemon = Dokuend(tmp / "home", settings)
    try:
        daemon.start()
        daemon.ctl("apps:create", APP)
        daemon.ctl("deploy", APP, str(app_dir))
        wait_for(lambda: any(r.get("state") == "running" for r in web(daemon)), 30, "web")
        app_port = int(web(daemon)[0]["port"])
        wait_for(lambda: serving(app_port, None), 30, "the app to answer")
        wait_for(lambda: serving(http_port, HOST), 30, "nginx to answer")
        yield daemon, tmp, app_port
    finally:
        daemon.stop()
        log = tmp / "dokuend.out"
        if log.exists():
            results["dokuend_log_tail"] = log.read_text(errors="replace").splitlines()[-20:]
        shutil.rmtree(tmp, ignore_errors=True)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": (nginx.stderr or nginx.stdout).strip(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 s runs, 3 restarts")
    parser.add_argument("--http-port", type=int, default=21500)
    parser.add_argument("--port-range", default="21000-21099")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--python-client", action="store_true", help="do not use wrk")
    parser.add_argument("--hand-port", type=int, default=21501, help="the hand-written nginx")
    parser.add_argument("--throughput-only", action="store_true", help="skip the restarts")
    parser.add_argument(
        "--variants",
        nargs="?",
        const=",".join(VARIANTS),
        default="",
        help=f"also dokuend's config, one knob changed (all, or some of {','.join(VARIANTS)})",
    )
    parser.add_argument("--seconds", type=float, default=None, help="each throughput run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved throughput rounds")
    args = parser.parse_args()
    return run(args)


def run(args: argparse.Namespace) -> int:
    if not args.python_client:
        ensure_wrk()
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    count = 3 if args.quick else 10
    if not port_free(args.http_port):
        raise BenchError(f"port {args.http_port} is in use")

    use_wrk = shutil.which("wrk") is not None and not args.python_client
    client = "wrk" if use_wrk else "python"
    load = run_wrk if use_wrk else run_python_client

    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "client": client,
    }
    with deployed(args.http_port, args.port_range, results) as (daemon, tmp, app_port):
        print(f"(1) throughput: {client}, {args.connections} connections, {seconds:g} s each")
        results["throughput"] = throughput(daemon, tmp, app_port, args, load, seconds)
        if args.throughput_only:
            return 0

        print(
            f"(2)+(3) {count} restarts under load (web=2; 3 keep-alive connections and 2 with "
            "a new connection per request, Python client)"
        )
        r = restarts(daemon, args.http_port, count)
        results["restarts"] = r
        for name in ("keepalive", "new_connection_per_request"):
            st = r[name]
            print(
                f"  {name}: {st['failed']} failed of {st['failed'] + st['requests_ok']} "
                f"(non-200 {st['non_200']}, connection errors {st['connection_errors']}"
                f"{', ' + str(st['error_kinds']) if st['error_kinds'] else ''}); keep-alive "
                f"connection closed by nginx and retried: {st['keepalive_closed_retried']}"
            )
        print(
            f"  failed requests: {r['failed']} (counting the retried ones as failures: "
            f"{r['failed_without_retry']})"
        )
        print(
            f"  median: command {r['median_command_ms']} ms, first new answer "
            f"{r['median_first_new_answer_ms']} ms, last old answer "
            f"{r['median_last_old_answer_ms']} ms"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {RESULTS.relative_to(ROOT)}")
    return 1 if results["restarts"]["failed"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
