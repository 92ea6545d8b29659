"""dokuend's CPU per router line, alone: the access log reader and the log writer of one
process, fed by a child that plays an nginx worker.

    python bench/router_lines.py                       # 10,000 lines/s for 3 s, 3 runs
    python bench/router_lines.py --rate 20000 --seconds 5 --runs 5
    python bench/router_lines.py --profile 5           # py-spy on the reader for 5 s

The child appends lines as nginx's workers do with ``buffer=64k flush=100ms`` (dokuend's log
format; a write when its 64 KiB buffer is full, or 100 ms after its first line) to the
router access log of an ``AccessLog`` with a real ``LogMux`` writing to a file in a
temporary directory, on the event loop dokuend runs (asyncio's own). The
figure is this process's CPU (user + system, every thread: the loop and the log writer's)
per line that reached the log file, which is counted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import anyio

from dokuen.proxy.accesslog import AccessLog
from dokuen.supervise.logmux import LogMux

SENDER = r"""
import os, sys, time
path, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
line = (
    b"bench serving 200 GET 3f9a2c1e-48211-%d-1 127.0.0.1 183 http "
    b"bench.localhost\t127.0.0.1:5001|0.001|0.000|0.001\t/items/%d?page=2\n"
)
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
buffer, first = [], 0.0
size = 0
n, start = 0, time.monotonic()
total = int(rate * seconds)
while n < total:
    due = int((time.monotonic() - start) * rate) + 1
    while n < min(due, total):
        one = line % (n, n)
        if size + len(one) > 65536:
            os.write(fd, b"".join(buffer))
            buffer, size = [], 0
        if not buffer:
            first = time.monotonic()
        buffer.append(one)
        size += len(one)
        n += 1
    if buffer and time.monotonic() - first >= 0.1:
        os.write(fd, b"".join(buffer))
        buffer, size = [], 0
    time.sleep(0.001)
if buffer:
    os.write(fd, b"".join(buffer))
print(n)
"""


def threads_cpu() -> dict[int, float]:
    """CPU seconds of each of this process's threads (from /proc, in clock ticks)."""
    found = {}
    for task in Path("/proc/self/task").iterdir():
        fields = (task / "stat").read_text().rpartition(")")[2].split()
        found[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_run(tmp: Path, rate: float, seconds: float, profile: float) -> dict[str, float]:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    mux = LogMux(tmp / "dokuen.log", max_bytes=1 << 30, keep=1)
    listener = AccessLog(tmp, mux)
    listener.update([("bench", "web.1", 5001)])
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(listener.run)
        sender = await anyio.open_process(
            [sys.executable, "-c", SENDER, str(listener.path), str(rate), str(seconds)]
        )
        spy = None
        if profile:
            out = Path("bench/results/router_lines.txt")
            out.parent.mkdir(parents=True, exist_ok=True)
            spy = await anyio.open_process(
                [
                    *(str(Path(sys.executable).parent / "py-spy"), "record", "--native"),
                    *("--threads", "-r", "250", "-d", str(round(profile))),
                    *("-f", "raw", "-o", str(out), "-p", str(os.getpid())),
                ],
                stdout=subprocess.DEVNULL,
            )
        before, started, each = cpu(), time.monotonic(), threads_cpu()
        await sender.wait()
        assert sender.stdout is not None
        sent = int((await sender.stdout.receive()).decode())
        with anyio.fail_after(30):
            while listener.counts["lines"] + listener.counts["unparsed"] < sent:
                await anyio.sleep(0.005)
            await mux.drained()
        used, wall = cpu() - before, time.monotonic() - started
        loop_thread = threading.get_native_id()
        after = threads_cpu()
        on_loop = after[loop_thread] - each.get(loop_thread, 0.0)
        tg.cancel_scope.cancel()
    if spy is not None:
        await spy.wait()
    written = (tmp / "dokuen.log").read_bytes().count(b"[router]: ")
    return {
        "sent": sent,
        "written": written,
        "unparsed": listener.counts["unparsed"],
        "turns": listener.turns,
        "cpu_us_per_line": used / max(written, 1) * 1e6,
        "loop_us_per_line": on_loop / max(written, 1) * 1e6,
        "rate": sent / wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=10000, help="lines per second")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=float, default=0, help="py-spy the first run (s)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="dokuen-router-bench-") as tmp:
        for n in range(args.runs):
            result = anyio.run(
                one_run,
                Path(tmp) / "run",
                args.rate,
                args.seconds,
                args.profile if n == 0 else 0,
                backend="asyncio",
            )
            results.append(result)
            print(
                f"run {n + 1}: {result['sent']:,} sent, {result['written']:,} in the log, "
                f"{result['unparsed']} unparsed, {result['rate']:,.0f} lines/s, "
                f"{result['turns']} turns: {result['cpu_us_per_line']:.1f} us CPU per line "
                f"({result['loop_us_per_line']:.1f} on the loop's thread)",
                flush=True,
            )
    median = statistics.median(r["cpu_us_per_line"] for r in results)
    print(f"median {median:.1f} us of CPU per router line")
    return 0 if all(r["written"] == r["sent"] for r in results) else 1


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
