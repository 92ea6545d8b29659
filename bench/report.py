"""What bench/run.py reports: the table of figures, the targets of docs/benchmarks.md judged
on them, and what was measured on (versions, the dokuend source)."""

from __future__ import annotations

import contextlib
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from harness import BIN as DOKUEN_BIN
from harness import ROOT, BenchError
from launcher import run_cli
from sizes import Metrics, Sizes


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool = False
    decimals: int = 3


METRICS = [
    Metric("w1_lines_per_s", "1 log lines/s", "lines/s", True, 0),
    Metric("w1_seconds", "1 all lines logged", "s"),
    Metric("w1_lost", "1 lines lost", "lines", decimals=0),
    Metric("w1_malformed", "1 lines split/malformed", "lines", decimals=0),
    Metric("w1_out_of_order", "1 lines out of order", "lines", decimals=0),
    Metric("w1_cpu_s", "1 supervisor CPU", "s", decimals=2),
    Metric("w1_printers_cpu_s", "1 printers' CPU", "s", decimals=2),
    Metric("w2_up_s", "2 all running", "s"),
    Metric("w2_stop_s", "2 stop command", "s"),
    Metric("w2_gone_s", "2 all gone", "s"),
    Metric("w3_rss_mib", "3 supervisor RSS", "MiB", decimals=1),
    Metric("w3_pss_mib", "3 supervisor PSS", "MiB", decimals=1),
    Metric("w3_uss_mib", "3 supervisor USS (private)", "MiB", decimals=1),
    Metric("w3_cpu_s", "3 idle CPU", "s", decimals=4),
    Metric("w3_wakeups", "3 idle wakeups", "times run", decimals=0),
    Metric("w4_restart_median_ms", "4 restart median", "ms", decimals=1),
    Metric("w4_restart_max_ms", "4 restart max", "ms", decimals=1),
    Metric("w5a_stop_s", "5a stop (in-group)", "s"),
    Metric("w5a_left", "5a left alive", "procs", decimals=0),
    Metric("w5b_stop_s", "5b stop (setsid)", "s"),
    Metric("w5b_left", "5b left alive", "procs", decimals=0),
]


def shown(value: float | int | None, metric: Metric) -> str:
    if value is None:
        return "n/a"
    if metric.decimals == 0:
        return f"{round(value):,}"
    return f"{value:.{metric.decimals}f}"


def shown_for(metrics: Metrics, metric: Metric) -> str:
    hung = metrics.get(metric.key.replace("_stop_s", "_hung"))
    if metric.key.endswith("_stop_s") and hung:
        return "hung"
    return shown(metrics.get(metric.key), metric)


def advantage(ours: float | int | None, theirs: float | int | None, metric: Metric) -> str:
    """How many times better dokuend is (above 1) or worse (below 1)."""
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return "-"
    factor = ours / theirs if metric.higher_is_better else theirs / ours
    return f"{factor:.2f}x"


def table(results: dict[str, Metrics], systems: list[str]) -> str:
    peers = [name for name in systems if name != "dokuend"] if "dokuend" in systems else []
    headers = ["metric", "unit", *systems, *(f"vs {p}" for p in peers)]
    rows = []
    for metric in METRICS:
        if not any(metric.key in results.get(name, {}) for name in systems):
            continue
        values = [shown_for(results.get(n, {}), metric) for n in systems]
        ours = results.get("dokuend", {}).get(metric.key)
        ratios = [advantage(ours, results.get(p, {}).get(metric.key), metric) for p in peers]
        rows.append([metric.label, metric.unit, *values, *ratios])
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, ["-" * w for w in widths], *rows]:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


@dataclass
class Target:
    number: str
    text: str
    passed: bool | None  # None: not measured in this run
    detail: str


def targets(results: dict[str, Metrics], sizes: Sizes) -> list[Target]:
    """The goals in docs/benchmarks.md, judged on this run's figures."""

    def get(system: str, key: str) -> float | None:
        value = results.get(system, {}).get(key)
        return None if value is None else float(value)

    def fmt(value: float | None, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:,.{digits}f}"

    found = []
    rate = get("dokuend", "w1_lines_per_s")
    peers = {name: get(name, "w1_lines_per_s") for name in ("supervisord", "circus")}
    faults = [get("dokuend", f"w1_{k}") for k in ("lost", "malformed", "out_of_order")]
    passed = None
    if rate is not None and None not in peers.values():
        passed = all(rate >= 2 * (v or 0) for v in peers.values()) and faults == [0, 0, 0]
    found.append(
        Target(
            "1",
            "log lines/s at least 2x supervisord's and circus's; no line lost, split, reordered",
            passed,
            f"dokuend {fmt(rate, 0)} lines/s; "
            + ", ".join(
                f"{n} {fmt(v, 0)} (2x = {fmt(2 * v if v else None, 0)})" for n, v in peers.items()
            )
            + f"; lost/malformed/out of order {[fmt(f, 0) for f in faults]}",
        )
    )
    up, plain, stop = (
        get(n, k)
        for n, k in [("dokuend", "w2_up_s"), ("plain", "w2_up_s"), ("dokuend", "w2_stop_s")]
    )
    passed = None
    if up is not None and plain is not None and stop is not None:
        passed = up <= 3 * plain and stop < 0.3
    found.append(
        Target(
            "2",
            f"{sizes.spawn} processes up within 3x the plain script's time; stopped in under 0.3 s",
            passed,
            f"up {fmt(up)} s (plain {fmt(plain)} s, limit {fmt(3 * plain if plain else None)} s);"
            f" dokuenctl stop {fmt(stop)} s",
        )
    )
    rss, cpu, peer_cpu = (
        get(n, k)
        for n, k in [
            ("dokuend", "w3_rss_mib"),
            ("dokuend", "w3_cpu_s"),
            ("supervisord", "w3_cpu_s"),
        ]
    )
    passed = None
    if rss is not None and cpu is not None and peer_cpu is not None:
        passed = rss < 40 and cpu <= peer_cpu
    found.append(
        Target(
            "3",
            "under 40 MiB RSS; no more idle CPU than supervisord",
            passed,
            f"RSS {fmt(rss, 1)} MiB; idle CPU {fmt(cpu, 4)} s vs supervisord {fmt(peer_cpu, 4)} s"
            f" over {sizes.idle_seconds:g} s",
        )
    )
    median, missed = get("dokuend", "w4_restart_median_ms"), get("dokuend", "w4_missed")
    passed = None if median is None else median < 100 and not missed
    found.append(
        Target(
            "4",
            "restart after kill -9: median under 100 ms",
            passed,
            f"median {fmt(median, 1)} ms, max {fmt(get('dokuend', 'w4_restart_max_ms'), 1)} ms",
        )
    )
    limit = sizes.grace + 0.5
    checks = {
        v: (get("dokuend", f"w{v}_stop_s"), get("dokuend", f"w{v}_left")) for v in ("5a", "5b")
    }
    passed = None
    if all(left is not None for _stop, left in checks.values()):
        passed = all(s is not None and s <= limit and left == 0 for s, left in checks.values())
    found.append(
        Target(
            "5",
            f"stubborn processes: none left; stopped within grace + 0.5 s ({limit:g} s)",
            passed,
            "; ".join(f"{v}: stop {fmt(s)} s, left {fmt(n, 0)}" for v, (s, n) in checks.items()),
        )
    )
    return found


def versions() -> dict[str, str]:

    found = {"python": platform.python_version()}
    for package in ("honcho", "supervisor", "circus", "psutil"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    with contextlib.suppress(OSError, BenchError):
        found["dokuen"] = run_cli([str(DOKUEN_BIN / "dokuend"), "--version"]).split()[-1]
    return found


def source_state() -> dict[str, Any]:
    """Which dokuend was measured: the commit, and the files under supervisor/ that differ
    from it (dokuend is installed editable, so the working tree is what runs)."""
    state: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "--no-optional-locks", "-C", str(ROOT)]  # read only: no index refresh
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True
        )
        state["commit"] = head.stdout.strip()
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", "supervisor"],
            check=True,
            capture_output=True,
            text=True,
        )
        state["changed"] = [line[3:] for line in status.stdout.splitlines()]
    return state


def dokuenctl_startup() -> float | None:
    """Median wall time of ``dokuenctl --version``: the part of every dokuenctl command's
    time that is Python starting and importing, before it talks to the daemon."""
    if not (DOKUEN_BIN / "dokuenctl").exists():
        return None
    times = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(
            [str(DOKUEN_BIN / "dokuenctl"), "--version"], capture_output=True, check=False
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)
