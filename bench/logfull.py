"""dokuend while its unified log's file system is full: its CPU and the lines of its own
output per second, before, during and after, this build against another (``--base``, a
bin/ with the other dokuend), alternating. As root (a 1 MiB tmpfs on ``HOME/logs``)::

    flock /tmp/dokuen-bench.lock python bench/logfull.py --base /tmp/main/bin --repeats 2

One app whose worker writes 2,500 lines of 200 bytes a second; each phase lasts
``--seconds``. dokuend is stopped by its pid and the tmpfs unmounted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
from harness import BIN, Dokuend, free_port, wait_for

TALKER = """\
import sys, time
n = 0
while True:
    n += 1
    sys.stdout.write(f"n {n} {'x' * 190}\\n")
    if n % 50 == 0:
        sys.stdout.flush()
        time.sleep(0.02)
"""


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 1):  # then the last bytes of a partial block
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def phase(process: psutil.Process, out: Path, seconds: float) -> tuple[float, float]:
    """dokuend's CPU (share of one core) and its own output lines a second."""
    cpu, lines = sum(process.cpu_times()[:2]), out.read_bytes().count(b"\n")
    time.sleep(seconds)
    cpu = sum(process.cpu_times()[:2]) - cpu
    return cpu / seconds, (out.read_bytes().count(b"\n") - lines) / seconds


def one(bin_dir: Path, seconds: float) -> list[tuple[float, float]]:
    with tempfile.TemporaryDirectory(prefix="dokuen-bench-logfull-") as work:
        home = Path(work) / "home"
        logs = home / "logs"
        logs.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(logs)], check=True)
        port = free_port()
        daemon = Dokuend(
            home,
            {
                "DOKUEN_NGINX": "off",
                "DOKUEN_PORT_RANGE": f"{port}-{port + 20}",
                # Rotated at 200 KiB, one old file kept: the log alone never fills the disk.
                "DOKUEN_LOG_MAX_BYTES": str(200 << 10),
                "DOKUEN_LOG_KEEP": "1",
            },
            command=[str(bin_dir / "dokuend")],
        )
        try:
            daemon.start()
            source = Path(work) / "src"
            source.mkdir()
            (source / "Procfile").write_text("talker: python3 talker.py\n")
            (source / "talker.py").write_text(TALKER)
            daemon.ctl("apps:create", "blog")
            daemon.ctl("deploy", "blog", str(source))
            log = logs / "dokuen.log"
            wait_for(lambda: b"blog[talker.1]" in log.read_bytes(), 30, "the talker's lines")
            assert daemon.proc is not None
            process, out = psutil.Process(daemon.proc.pid), Path(work) / "dokuend.out"
            before = phase(process, out, seconds)
            filler = fill(logs)
            during = phase(process, out, seconds)
            filler.unlink()
            after = phase(process, out, seconds)
            return [before, during, after]
        finally:
            began = time.monotonic()
            daemon.stop()
            print(f"  (stopped in {time.monotonic() - began:.1f} s)", flush=True)
            subprocess.run(["umount", "-l", str(logs)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other build's bin/")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=2)
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("mounts a tmpfs: run it as root")
    builds = {"this": BIN, "base": options.base}
    runs: dict[str, list[list[tuple[float, float]]]] = {name: [] for name in builds}
    for _ in range(options.repeats):
        for name, bin_dir in builds.items():
            runs[name].append(one(bin_dir, options.seconds))
            print(name, [f"{c:.0%} CPU, {n:.1f} lines/s" for c, n in runs[name][-1]], flush=True)
    print(f"medians of {options.repeats}: dokuend CPU, its own output lines a second")
    for name, results in runs.items():
        cells = []
        for index, label in enumerate(("before", "disk full", "after")):
            cpu = statistics.median(r[index][0] for r in results)
            lines = statistics.median(r[index][1] for r in results)
            cells.append(f"{label} {cpu:.0%} / {lines:.1f}")
        print(f"  {name}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
