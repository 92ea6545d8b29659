"""Detached one-off runs (``run:detached``): how long a run's output takes to reach the
unified log and how much of dokuend's CPU it costs, this build against another, the two
alternating in one command::

    flock /tmp/dokuen-bench.lock python bench/detached.py --base /tmp/main/bin --repeats 3

``--base`` is a directory with the other build's ``dokuend`` (a virtualenv's bin/, or a
script that runs it). Each run starts a fresh daemon in a temporary directory with one app
(``idle: sleep``) and times ``dokuenctl run:detached`` of a command that writes ``--lines``
numbered lines of 100 bytes, until ``run.1 exited`` is in the log; every line must be
there exactly once. dokuend is stopped by its pid.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psutil
from harness import BIN, BenchError, Dokuend, free_port, wait_for

WRITER = (
    "import sys\n"
    "w = sys.stdout.write\n"
    "for i in range({lines}):\n"
    "    w('%07d %s\\n' % (i, 'x' * 91))\n"
)


def tail(path: Path, size: int = 4096) -> bytes:
    with path.open("rb") as log:
        log.seek(max(0, path.stat().st_size - size))
        return log.read()


def one(bin_dir: Path, lines: int) -> tuple[float, float]:
    """Seconds from ``run:detached`` to its exit in the log, and dokuend's CPU seconds."""
    with tempfile.TemporaryDirectory(prefix="dokuen-bench-detached-") as work:
        home = Path(work) / "home"
        port = free_port()
        daemon = Dokuend(
            home,
            {
                "DOKUEN_NGINX": "off",
                "DOKUEN_POSTGRES": "off",
                "DOKUEN_PORT_RANGE": f"{port}-{port + 20}",
                "DOKUEN_LOG_MAX_BYTES": str(1 << 30),
            },
            command=[str(bin_dir / "dokuend")],
        )
        daemon.start()
        try:
            source = Path(work) / "src"
            source.mkdir()
            (source / "Procfile").write_text("idle: sleep 100000\n")
            (source / "writer.py").write_text(WRITER.format(lines=lines))
            daemon.ctl("apps:create", "blog")
            daemon.ctl("deploy", "blog", str(source))
            assert daemon.proc is not None
            process = psutil.Process(daemon.proc.pid)
            log = home / "logs" / "dokuen.log"
            before = sum(process.cpu_times()[:2])
            began = time.monotonic()
            daemon.ctl("run:detached", "blog", "python3 writer.py")
            wait_for(lambda: b"blog[dokuen]: run.1 exited" in tail(log), 300, "run.1 to end")
            took = time.monotonic() - began
            cpu = sum(process.cpu_times()[:2]) - before
            seen = log.read_bytes().count(b" blog[run.1]: ")
            if seen != lines:
                raise BenchError(f"{seen} of {lines} lines in the log")
            return took, cpu
        finally:
            daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other build's bin/")
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    builds = {"this": BIN, "base": options.base}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in builds}
    for repeat in range(options.repeats):
        for name, bin_dir in builds.items():  # alternating: both see the same load
            took, cpu = one(bin_dir, options.lines)
            results[name].append((took, cpu))
            print(f"run {repeat + 1} {name}: {took:.2f} s, dokuend CPU {cpu:.2f} s", flush=True)
    print(f"{options.lines} lines of 100 bytes, median of {options.repeats}:")
    medians = {
        name: (statistics.median(t for t, _ in runs), statistics.median(c for _, c in runs))
        for name, runs in results.items()
    }
    for name, (took, cpu) in medians.items():
        print(f"  {name}: {took:.2f} s to the log, dokuend CPU {cpu:.2f} s")
    this, base = medians["this"], medians["base"]
    print(f"  this/base: time {this[0] / base[0]:.2f}, CPU {this[1] / base[1]:.2f}")


if __name__ == "__main__":
    main()
