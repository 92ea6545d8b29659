"""Where an idle dokuend's memory goes: workload 3's daemon (N idle ``sleep`` children after
a deploy) read from ``/proc/PID/smaps_rollup``, and with ``--trace`` what its Python
objects are and which modules it loaded.

    python bench/idle.py --children 0 --children 100          # RSS, PSS, USS for each
    python bench/idle.py --children 0 --children 100 --trace  # and the top allocations

``--trace`` starts dokuend with ``PYTHONTRACEMALLOC`` and a ``sitecustomize`` (from a
temporary directory on ``PYTHONPATH``, nothing in the package) whose thread writes a
tracemalloc snapshot and the list of loaded modules when a file appears; the tracing itself
costs memory, so the RSS of a traced run is not the RSS of a real one. Compare two traces
by their difference, which is what one idle child costs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

from harness import wait_for
from processes import wait_until_up
from systems import Dokuend, Proc

PROBE = """
import os, sys, threading, time, tracemalloc, json
def _probe():
    want = os.environ["DOKUEN_PROBE"]
    while not os.path.exists(want):
        time.sleep(0.05)
    import gc; gc.collect()
    tracemalloc.take_snapshot().dump(want + ".snap")
    names = sorted(n for n, m in list(sys.modules.items()) if m is not None)
    with open(want + ".modules", "w") as f:
        json.dump(names, f)
    os.rename(want, want + ".done")
if "DOKUEN_PROBE" in os.environ and sys.argv[0].endswith("dokuend"):
    threading.Thread(target=_probe, daemon=True).start()
"""


def smaps(pid: int) -> dict[str, float]:
    """Rss, Pss and the private pages of ``pid``, in MiB."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0]) / 1024
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "uss": fields["Private_Clean"] + fields["Private_Dirty"],
        "anon": fields["Anonymous"],
    }


def largest_mappings(pid: int, count: int = 30) -> list[str]:
    """The mappings of ``pid`` that hold the most resident memory, with their sizes."""
    held: list[tuple[int, int, str]] = []
    name, size = "", 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            start, end = (int(part, 16) for part in fields[0].split("-"))
            name, size = (fields[5] if len(fields) > 5 else "[anonymous]"), end - start
        elif fields[0] == "Rss:":
            held.append((int(fields[1]), size >> 10, name))
    held.sort(reverse=True)
    return [f"{rss:7d} KiB of {size:8d} KiB  {name}" for rss, size, name in held[:count]]


def measure(
    children: int, trace: bool, work: Path, maps: bool = False
) -> tracemalloc.Snapshot | None:
    system = Dokuend(work)
    probe = work / "probe"
    if os.environ.get("DOKUEN_IDLE_SITE"):  # a sitecustomize of one's own, to look further
        system.env = system.env | {"PYTHONPATH": os.environ["DOKUEN_IDLE_SITE"]}
    if trace:
        site = work / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(PROBE)
        system.env = system.env | {
            "PYTHONPATH": str(site),
            "PYTHONTRACEMALLOC": "12",
            "DOKUEN_PROBE": str(probe),
        }
    try:
        system.prepare([Proc("idle", "exec sleep 1000", max(children, 1))], 10)
        if children:
            system.start()
            wait_until_up(system, children)
        time.sleep(2)  # let start-up work settle
        assert system.main is not None
        numbers = smaps(system.main.pid)
        mapped = Path(f"/proc/{system.main.pid}/maps").read_text()
        libraries = [name for name in ("libssl", "libcrypto") if f"/{name}." in mapped]
        print(
            f"{children:4d} children: RSS {numbers['rss']:.1f} MiB, PSS {numbers['pss']:.1f},"
            f" USS {numbers['uss']:.1f}, anonymous {numbers['anon']:.1f};"
            f" mapped: {', '.join(libraries) or 'neither libssl nor libcrypto'}",
            flush=True,
        )
        if maps:
            threads = len(list(Path(f"/proc/{system.main.pid}/task").iterdir()))
            print(f"      {threads} threads; the mappings that hold the most:")
            for line in largest_mappings(system.main.pid):
                print(f"      {line}")
        if not trace:
            return None
        probe.touch()
        wait_for(lambda: Path(f"{probe}.done").exists(), 60, "the snapshot", 0.1)
        modules = Path(f"{probe}.modules").read_text()
        print(f"      {modules.count(',') + 1} modules loaded", flush=True)
        return tracemalloc.Snapshot.load(f"{probe}.snap")
    finally:
        with contextlib.suppress(Exception):
            system.stop()
        system.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, action="append", default=[])
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--stacks", action="store_true", help="group by whole tracebacks")
    parser.add_argument("--maps", action="store_true", help="the mappings that hold the most")
    args = parser.parse_args()
    snapshots = []
    with tempfile.TemporaryDirectory(prefix="dokuen-idle-") as base:
        for number, children in enumerate(args.children or [100]):
            work = Path(base) / f"run{number}"
            work.mkdir()
            snapshots.append((children, measure(children, args.trace, work, args.maps)))
    traced = [(n, s) for n, s in snapshots if s is not None]
    if len(traced) >= 2:
        (n0, first), (n1, last) = traced[0], traced[-1]
        stats = last.compare_to(first, "traceback" if args.stacks else "lineno")
        total = sum(stat.size_diff for stat in stats)
        per = total / max(1, n1 - n0)
        print(
            f"traced Python memory, {n0} -> {n1} children: {total / 1024:+.0f} KiB"
            f" ({per / 1024:.1f} KiB a child)"
        )
        for stat in stats[: args.top]:
            frames = list(stat.traceback)  # the oldest first
            print(f"  {stat.size_diff / 1024:+8.1f} KiB {stat.count_diff:+6d}  {frames[-1]}")
            if args.stacks:  # where in dokuen it came from, the innermost first
                for frame in reversed(frames[:-1]):
                    if "/dokuen/" in frame.filename:
                        print(f"        {frame}")
    elif traced:
        for line in traced[0][1].statistics("filename")[: args.top]:
            print(f"  {line.size / 1024:8.1f} KiB  {line.traceback[0].filename}")


if __name__ == "__main__":
    main()
