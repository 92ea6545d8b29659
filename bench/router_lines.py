"""dokuend's CPU per router line, alone: the listener and the log writer of one process,
fed by a child that plays an nginx worker.

    python bench/router_lines.py                       # 10,000 lines/s for 3 s, 3 runs
    python bench/router_lines.py --rate 20000 --seconds 5 --runs 5
    python bench/router_lines.py --profile 5           # py-spy on the reader for 5 s

The child sends datagrams as nginx's workers do (dokuend's log format, syslog header, one a
request, a burst every millisecond) to a ``RouterListener`` with a real ``LogMux`` writing
to a file in a temporary directory, on the event loop dokuend runs (uvloop where it is
installed). The figure is this process's CPU (user + system, every thread: the loop and
the log writer's) per line that reached the log file, which is counted at the end. With
``--qlen`` (root) net.unix.max_dgram_qlen is set while the socket is made (systemd's 512:
the listener reads in turns), and restored.

The child sends with blocking sends, so a full socket holds it back rather than losing
lines: the rate is at most what the listener keeps up with, and the CPU per line is for
every line sent.
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
from dokuen.proxy.listener import RouterListener

from dokuen.supervise.logmux import LogMux

SENDER = r"""
import os, socket, sys, time
path, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
line = (
    b"<190>Dec  6 09:01:02 dokuen: bench serving 200 GET %032x 127.0.0.1 183 http "
    b"bench.localhost\t127.0.0.1:5001|0.001|0.000|0.001\t/items/%d?page=2"
)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(path)
n, start = 0, time.monotonic()
total = int(rate * seconds)
while n < total:
    due = int((time.monotonic() - start) * rate) + 1
    while n < min(due, total):
        s.send(line % (n, n))
        n += 1
    time.sleep(0.001)
print(n)
"""

QLEN = Path("/proc/sys/net/unix/max_dgram_qlen")


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


async def one_run(
    tmp: Path, rate: float, seconds: float, profile: float, pause: float | None
) -> dict[str, float]:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    mux = LogMux(tmp / "dokuen.log", max_bytes=1 << 30, keep=1)
    listener = RouterListener(tmp / "router.sock", mux, os.getpid, pause=pause)
    listener.update([("bench", "web.1", 5001)])
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(listener.run)
        sender = await anyio.open_process(
            [sys.executable, "-c", SENDER, str(tmp / "router.sock"), str(rate), str(seconds)]
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
            while listener.counts["lines"] + listener.counts["dropped"] < sent:
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
        "dropped": listener.counts["dropped"],
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
    parser.add_argument("--qlen", type=int, default=None, help="net.unix.max_dgram_qlen (root)")
    parser.add_argument("--pause", type=float, default=None, help="ms between turns")
    parser.add_argument("--profile", type=float, default=0, help="py-spy the first run (s)")
    args = parser.parse_args()
    before = int(QLEN.read_text())
    if args.qlen is not None:
        QLEN.write_text(f"{args.qlen}\n")
    try:
        results = []
        with tempfile.TemporaryDirectory(prefix="dokuen-router-bench-") as tmp:
            for n in range(args.runs):
                result = anyio.run(
                    one_run,
                    Path(tmp) / "run",
                    args.rate,
                    args.seconds,
                    args.profile if n == 0 else 0,
                    None if args.pause is None else args.pause / 1000,
                    backend="asyncio",
                    backend_options={"use_uvloop": True},
                )
                results.append(result)
                print(
                    f"run {n + 1}: {result['sent']:,} sent, {result['written']:,} in the log, "
                    f"{result['dropped']} dropped, {result['rate']:,.0f} lines/s, "
                    f"{result['turns']} turns: {result['cpu_us_per_line']:.1f} us CPU per line "
                    f"({result['loop_us_per_line']:.1f} on the loop's thread)",
                    flush=True,
                )
    finally:
        QLEN.write_text(f"{before}\n")
    median = statistics.median(r["cpu_us_per_line"] for r in results)
    print(f"queue {args.qlen or before}: median {median:.1f} us of CPU per router line")
    return 0 if all(r["written"] == r["sent"] for r in results) else 1


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
