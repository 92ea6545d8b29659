"""Benchmark dokuend against honcho, supervisord, circus and a plain ``subprocess.Popen`` script.

Run it from the repository root::

    python bench/run.py            # the full run (about 7.5 minutes on 2 cores)
    python bench/run.py --quick    # small sizes, a smoke run
    python bench/run.py --only supervisord --workload 1
    python bench/run.py --only dokuend --only supervisord --workload 1 --workload 3
    DOKUEN_BENCH_BASE=/tmp/main/venv/bin python bench/run.py --only dokuend \
        --only dokuend-base --workload 1 --repeats 5   # a change against another build

The first start creates ``bench/.venv``, installs psutil and the peers (honcho, supervisor,
circus) there from PyPI, and re-runs itself with that interpreter; a peer that does not
install is reported and skipped. dokuend and dokuenctl come from the project's ``.venv``.
Every workload starts a fresh daemon in a temporary directory and stops it by PID when it
is done. The table goes to stdout and, as JSON, to ``bench/results/latest.json``.
docs/benchmarks.md describes the workloads and the targets.

This file holds the command line and the run loop; the rest is beside it in bench/:
bootstrap.py (bench/.venv), launcher.py (processes), systems.py and foreground.py (the systems
under test), sizes.py, logs.py (workload 1), processes.py (workloads 2 to 5) and report.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bootstrap import bootstrap
from foreground import Honcho, Plain
from harness import ROOT, BenchError
from launcher import end_launched
from logs import log_throughput, printer_ceiling
from processes import idle_cost, restart_latency, spawn_and_stop, stubborn_stop
from report import dokuenctl_startup, source_state, table, targets, versions
from sizes import FULL, QUICK, Metrics, Sizes
from systems import Circus, Dokuend, DokuendBase, Supervisord, System

try:
    import psutil
except ModuleNotFoundError:  # started outside bench/.venv: bootstrap() re-execs in there
    psutil = None  # type: ignore[assignment]

RESULTS = ROOT / "bench" / "results" / "latest.json"
SYSTEMS = ("dokuend", "dokuend-base", "honcho", "supervisord", "circus", "plain")
SYSTEM_TYPES: dict[str, type[System]] = {
    cls.name: cls for cls in (Dokuend, DokuendBase, Honcho, Supervisord, Circus, Plain)
}


@dataclass(frozen=True)
class Workload:
    number: str
    title: str
    run: Callable[[System, Sizes], Metrics]
    repeat: bool = False  # short and noisy: run up to REPEATS times, report the median


REPEATS = 3
REPEAT_BUDGET = 30.0  # seconds per system and workload; a slow system gets fewer runs
WORST_OF = ("lost", "malformed", "out_of_order", "duplicated", "missed", "left", "hung")

WORKLOADS = [
    Workload("1", "log throughput", log_throughput, repeat=True),
    Workload("2", "spawn and stop", spawn_and_stop, repeat=True),
    Workload("3", "idle cost", idle_cost),
    Workload("4", "restart after kill -9", restart_latency),
    Workload("5a", "stop, grandchild in group", lambda s, z: stubborn_stop(s, z, "w5a")),
    Workload("5b", "stop, grandchild setsid", lambda s, z: stubborn_stop(s, z, "w5b")),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--only", action="append", choices=SYSTEMS, help="run this system only (repeatable)"
    )
    parser.add_argument(
        "--workload",
        action="append",
        choices=[w.number for w in WORKLOADS],
        help="run only this workload (repeatable)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=REPEATS,
        help=f"runs of each repeated workload per system, alternating systems (default {REPEATS})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    return parser.parse_args()


@dataclass
class Run:
    sizes: Sizes
    systems: list[str]
    results: dict[str, Metrics] = field(default_factory=dict)
    runs: dict[str, dict[str, list[Metrics]]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def note(self, system: str, text: str) -> None:
        self.notes.setdefault(system, []).append(text)
        print(f"    {system}: {text}", flush=True)


def combine(runs: list[Metrics]) -> Metrics:
    """One figure per metric over repeated runs: the worst count of faults, else the median
    (None, a run that did not finish, counts as the worst)."""
    combined: Metrics = {}
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        if key.endswith(WORST_OF):
            combined[key] = max(v or 0 for v in values)
        elif any(v is None for v in values):
            combined[key] = None
        else:
            combined[key] = statistics.median(v for v in values if v is not None)
    return combined


def run_once(run: Run, workload: Workload, name: str, work: Path, keep: bool) -> Metrics | None:
    system = SYSTEM_TYPES[name](work)
    work.mkdir()
    try:
        return workload.run(system, run.sizes)
    except (BenchError, OSError, psutil.Error, subprocess.SubprocessError) as exc:
        run.note(name, f"workload {workload.number} failed: {exc}")
        return None
    finally:
        system.shutdown()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def run_workloads(run: Run, chosen: list[Workload], base: Path, keep: bool, repeats: int) -> None:
    """Each workload on every system; a repeated one round after round, the systems taking
    turns in each round, so that a change in the machine's load falls on all of them."""
    for workload in chosen:
        print(f"workload {workload.number}: {workload.title}", flush=True)
        runs: dict[str, list[Metrics]] = {name: [] for name in run.systems}
        spent = dict.fromkeys(run.systems, 0.0)
        failed: set[str] = set()
        for round_ in range(repeats if workload.repeat else 1):
            for name in run.systems:
                if name in failed or (round_ and spent[name] > REPEAT_BUDGET * repeats / REPEATS):
                    continue
                started = time.perf_counter()
                work = base / f"w{workload.number}-{name}-{round_ + 1}"
                metrics = run_once(run, workload, name, work, keep)
                spent[name] += time.perf_counter() - started
                if metrics is None:
                    failed.add(name)
                    continue
                runs[name].append(metrics)
        for name in run.systems:
            if not runs[name]:
                continue
            combined = combine(runs[name])
            run.results.setdefault(name, {}).update(combined)
            run.runs.setdefault(name, {})[workload.number] = runs[name]
            summary = ", ".join(
                f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                for key, value in combined.items()
            )
            took = spent[name]
            print(f"  {name:<12} {took:5.1f}s  {len(runs[name])} run(s)  {summary}", flush=True)


def exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # through the finally blocks that stop what was started


def main() -> None:
    args = parse_args()
    bootstrap(args.only, Path(__file__))
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    sizes = QUICK if args.quick else FULL
    wanted = [name for name in SYSTEMS if name in args.only] if args.only else list(SYSTEMS)
    run = Run(sizes, [])
    for name in wanted:
        reason = SYSTEM_TYPES[name](Path()).unavailable()
        if reason:
            run.note(name, f"skipped: {reason}")
        else:
            run.systems.append(name)
    chosen = [w for w in WORKLOADS if not args.workload or w.number in args.workload]
    base = Path(tempfile.mkdtemp(prefix="dokuen-bench-"))
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"note: load average {load_before[0]:.2f} before the run: figures may be noisy")
    ceiling = None
    if any(w.number == "1" for w in chosen):
        rates = [printer_ceiling(sizes, base / f"ceiling-{n}") for n in range(REPEATS)]
        ceiling = statistics.median(rates)
        print(f"printers writing to /dev/null (no supervisor): {ceiling:,.0f} lines/s")
    began = time.perf_counter()
    try:
        run_workloads(run, chosen, base, args.keep, max(1, args.repeats))
    finally:
        end_launched()
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    found = targets(run.results, sizes)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/run.py" + (" --quick" if args.quick else ""),
        "machine": {
            "nproc": os.cpu_count(),
            "platform": platform.platform(),
            "versions": versions(),
            "dokuenctl_startup_s": dokuenctl_startup(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "dokuen_source": source_state(),
        "printer_ceiling_lines_per_s": ceiling,
        "sizes": asdict(sizes),
        "duration_s": round(time.perf_counter() - began, 1),
        "results": run.results,
        "runs": run.runs,
        "notes": run.notes,
        "targets": [asdict(t) for t in found],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(run.results, run.systems))
    print("\n(vs PEER: how many times better dokuend is; below 1.00x it is worse)")
    if ceiling is not None:
        print(f"printers alone, writing to /dev/null: {ceiling:,.0f} lines/s")
    print("\ntargets:")
    for target in found:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[target.passed]
        print(f"  {verdict} {target.number}. {target.text}\n         {target.detail}")
    print(f"\nwrote {RESULTS.relative_to(ROOT)} ({report['duration_s']} s)")


if __name__ == "__main__":
    main()
