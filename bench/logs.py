"""Workload 1, log throughput: printers write as fast as they can; every line must reach the
system's logs whole, once, in order and under the right process."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness import wait_for
from launcher import BASE_ENV, cpu_seconds
from sizes import Metrics, Sizes
from systems import Proc, System

PRINTER_SCRIPT = """\
import os, sys, time

ident, count, gate = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
open(os.path.join(gate, "ready.%d" % ident), "w").close()
go = os.path.join(gate, "go")
while not os.path.exists(go):
    time.sleep(0.002)
pad = b"x" * 85
fd = sys.stdout.fileno()
# One write per line, as a logger that flushes every record does (or PYTHONUNBUFFERED=1).
for seq in range(count):
    os.write(fd, b"#P%02d S%07d %s\\n" % (ident, seq, pad))  # 100 bytes with the newline
os.write(fd, b"#P%02d DONE\\n" % ident)
open(os.path.join(gate, "done.%d" % ident), "w").close()
while True:  # stay up: an exit would be restarted (or, under honcho, stop everything)
    time.sleep(3600)
"""
PAYLOAD = re.compile(rb"#P(\d\d) (?:S(\d{7}) x{85}|DONE)")


class DoneCounter:
    """Reads the logs as they grow and counts the printers' final ``DONE`` lines."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.files: dict[Path, IO[bytes]] = {}
        self.carry = dict.fromkeys(paths, b"")
        self.done = 0

    def poll(self) -> int:
        for path in self.paths:
            file = self.files.get(path)
            if file is None:
                try:
                    file = self.files[path] = path.open("rb")
                except FileNotFoundError:
                    continue
            data = self.carry[path] + file.read()
            cut = data.rfind(b"\n") + 1
            self.done += data[:cut].count(b" DONE\n")
            self.carry[path] = data[cut:]
        return self.done

    def close(self) -> None:
        for file in self.files.values():
            file.close()


@dataclass
class LineCheck:
    received: int = 0
    lost: int = 0
    malformed: int = 0  # split, merged or cut lines, or a line under the wrong process
    out_of_order: int = 0
    duplicated: int = 0


def check_lines(system: System, printers: int, lines: int) -> LineCheck:
    """Every printer's lines, each whole, once, in order, under the right process?"""
    result = LineCheck()
    got = {ident: bytearray(lines) for ident in range(1, printers + 1)}
    highest = dict.fromkeys(got, -1)
    for path in system.log_files():
        if not path.exists():
            continue
        with path.open("rb") as file:
            for raw in file:
                line = raw.rstrip(b"\n")
                start = line.find(b"#P")
                if start < 0:
                    if b"xxxx" in line:  # a piece of a printer's line, cut off its start
                        result.malformed += 1
                    continue
                match = PAYLOAD.fullmatch(line, start)
                ident = int(match[1]) if match else 0
                if match is None or ident not in got:
                    result.malformed += 1
                    continue
                if system.source_of(path, line[:start]) != ident:
                    result.malformed += 1
                    continue
                if match[2] is None:  # DONE
                    continue
                seq = int(match[2])
                if seq >= lines:
                    result.malformed += 1
                    continue
                result.received += 1
                if got[ident][seq]:
                    result.duplicated += 1
                got[ident][seq] = 1
                if seq < highest[ident]:
                    result.out_of_order += 1
                highest[ident] = max(highest[ident], seq)
    result.lost = sum(lines - sum(seen) for seen in got.values())
    return result


def log_throughput(system: System, sizes: Sizes) -> Metrics:
    """Workload 1: printers write as fast as they can; time until every line is logged."""
    gate = system.work / "gate"
    gate.mkdir()
    logs = system.work / "logs"
    logs.mkdir()
    printer = system.work / "printer.py"
    printer.write_text(PRINTER_SCRIPT)
    procs = [
        Proc(
            f"p{i:02d}",
            f"exec {sys.executable} {printer} {i} {sizes.lines} {gate}",
            log=logs / f"p{i:02d}.log",
        )
        for i in range(1, sizes.printers + 1)
    ]
    system.prepare(procs, sizes.grace)
    for stale in gate.iterdir():  # printers that dokuend's deploy started and stopped
        stale.unlink()
    system.start()
    wait_for(
        lambda: len(list(gate.glob("ready.*"))) >= sizes.printers, 60, "printers to be ready", 0.01
    )
    counter = DoneCounter(system.log_files())
    supervisor = system.supervisor()
    printers = system.workload()
    cpu_before = cpu_seconds(supervisor)
    printers_before = cpu_seconds(printers)
    started = time.perf_counter()
    (gate / "go").touch()
    timed_out = False
    while counter.poll() < sizes.printers:
        if time.perf_counter() - started > sizes.log_timeout:
            timed_out = True
            break
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    counter.close()
    cpu = cpu_seconds(supervisor) - cpu_before
    printers_cpu = cpu_seconds(printers) - printers_before  # they stay up once done
    (gate / "go").unlink()  # a printer that a daemon restarts while stopping stays quiet
    check = check_lines(system, sizes.printers, sizes.lines)
    if timed_out:
        print(f"    not every line was logged within {sizes.log_timeout:g}s")
    return {
        "w1_lines_per_s": check.received / elapsed,
        "w1_seconds": None if timed_out else elapsed,
        "w1_lost": check.lost,
        "w1_malformed": check.malformed,
        "w1_out_of_order": check.out_of_order,
        "w1_duplicated": check.duplicated,
        "w1_cpu_s": cpu,
        # What the printers' writes cost them: a pipe that wakes its reader costs more than
        # one that does not, and no system can log faster than its printers write.
        "w1_printers_cpu_s": printers_cpu,
    }


def printer_ceiling(sizes: Sizes, work: Path) -> float:
    """The load generator's own rate: the printers writing to /dev/null, no supervisor.
    No system can log faster than this."""
    gate = work / "gate"
    gate.mkdir(parents=True)
    printer = work / "printer.py"
    printer.write_text(PRINTER_SCRIPT)
    printers = [
        subprocess.Popen(
            [sys.executable, str(printer), str(i), str(sizes.lines), str(gate)],
            stdout=subprocess.DEVNULL,
            env=BASE_ENV,
            start_new_session=True,
        )
        for i in range(1, sizes.printers + 1)
    ]
    try:
        wait_for(lambda: len(list(gate.glob("ready.*"))) >= sizes.printers, 60, "printers", 0.01)
        started = time.perf_counter()
        (gate / "go").touch()
        wait_for(lambda: len(list(gate.glob("done.*"))) >= sizes.printers, 60, "printers", 0.005)
        return sizes.printers * sizes.lines / (time.perf_counter() - started)
    finally:
        for process in printers:
            process.kill()
            process.wait()
