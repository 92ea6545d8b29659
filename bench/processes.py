"""Workloads 2 to 5, processes: spawn and stop, idle cost, restart after kill -9 and the stop
of processes that ignore SIGTERM."""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path

from harness import BenchError, wait_for
from launcher import alive, descendants, kill_processes
from sizes import Metrics, Sizes
from systems import Proc, System

try:
    import psutil
except ModuleNotFoundError:  # started outside bench/.venv: run.py re-execs in there first
    psutil = None  # type: ignore[assignment]


def count_named(system: System, name: str) -> int:
    if system.main is None:
        return 0
    count = 0
    for process in descendants(system.main.pid):
        with contextlib.suppress(psutil.Error):
            if process.name() == name and process.status() != psutil.STATUS_ZOMBIE:
                count += 1
    return count


def wait_until_up(
    system: System, slots: int, sleeps: int | None = None, timeout: float = 120
) -> None:
    """Until ``sleeps`` (default ``slots``) sleep processes run under the system and, where
    the system says, it counts ``slots`` processes running."""
    wanted = slots if sleeps is None else sleeps

    def up() -> bool:
        if count_named(system, "sleep") < wanted:
            return False
        by_status = system.running_by_status()
        return by_status is None or by_status >= slots

    wait_for(up, timeout, f"{wanted} sleep processes under {system.name}", interval=0.02)


def spawn_and_stop(system: System, sizes: Sizes) -> Metrics:
    """Workload 2: time to start ``spawn`` sleeps from nothing, then to stop them all."""
    system.prepare([Proc("s", "exec sleep 1000", sizes.spawn)], 10)
    started = time.perf_counter()
    system.start()
    wait_until_up(system, sizes.spawn)
    up = time.perf_counter() - started
    sleeps = [p for p in system.workload() if p.name() == "sleep"]
    started = time.perf_counter()
    system.stop()
    command = time.perf_counter() - started
    wait_for(lambda: not any(alive(p) for p in sleeps), 60, "the sleeps to end", 0.005)
    gone = time.perf_counter() - started
    return {"w2_up_s": up, "w2_stop_s": command, "w2_gone_s": gone}


def idle_cost(system: System, sizes: Sizes) -> Metrics:
    """Workload 3: the supervisor's memory and CPU while ``idle`` sleeps do nothing."""
    system.prepare([Proc("idle", "exec sleep 1000", sizes.idle)], 10)
    system.start()
    wait_until_up(system, sizes.idle)
    time.sleep(2)  # let start-up work settle
    supervisor = system.supervisor()
    cpu_before, slices_before = scheduled(supervisor)
    time.sleep(sizes.idle_seconds)
    cpu_after, slices_after = scheduled(supervisor)
    # RSS counts every page mapped, the shared libraries' text too; PSS divides a shared page
    # among the processes that map it; USS is what this process alone holds (its heap).
    rss = pss = uss = 0
    for process in supervisor:
        with contextlib.suppress(psutil.Error):
            memory = process.memory_full_info()
            rss += memory.rss
            pss += memory.pss
            uss += memory.uss
    system.stop()
    return {
        "w3_rss_mib": rss / 2**20,
        "w3_pss_mib": pss / 2**20,
        "w3_uss_mib": uss / 2**20,
        "w3_cpu_s": cpu_after - cpu_before,
        "w3_wakeups": slices_after - slices_before,
        "w3_helpers": len(supervisor) - 1,
    }


def scheduled(processes: list[psutil.Process]) -> tuple[float, int]:
    """The CPU seconds these processes' threads have run so far, to the nanosecond, and how
    many times they were put on a CPU (``/proc/PID/task/TID/schedstat``): clock ticks are
    10 ms, which is all an idle supervisor spends in 20 s."""
    seconds, slices = 0.0, 0
    for process in processes:
        for task in Path(f"/proc/{process.pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                on_cpu, _, times = (task / "schedstat").read_text().split()
                seconds, slices = seconds + int(on_cpu) / 1e9, slices + int(times)
    return seconds, slices


def find_sleep(system: System, seconds: int) -> psutil.Process | None:
    for process in system.workload():
        with contextlib.suppress(psutil.Error):
            if process.cmdline() == ["sleep", str(seconds)]:
                return process
    return None


def restart_latency(system: System, sizes: Sizes) -> Metrics:
    """Workload 4: kill -9 each of ``kills`` processes once; time until its replacement runs."""
    if not system.restarts:
        return {"w4_restart_median_ms": None, "w4_restart_max_ms": None}
    base = 100_000
    procs = [Proc(f"k{i:02d}", f"exec sleep {base + i}") for i in range(1, sizes.kills + 1)]
    system.prepare(procs, 10)
    system.start()
    wait_until_up(system, sizes.kills, timeout=60)
    time.sleep(1.5)  # every process has been up for over a second: a restart is no crash loop
    latencies: list[float] = []
    missed = 0
    for i in range(1, sizes.kills + 1):
        marker = f"sleep {base + i}"
        victim = find_sleep(system, base + i)
        if victim is None:
            raise BenchError(f"no process runs {marker!r}")
        known = set(psutil.pids())
        started = time.perf_counter()
        victim.kill()
        replacement = None
        while replacement is None and time.perf_counter() - started < 10:
            time.sleep(0.005)
            for pid in psutil.pids():
                if pid in known:
                    continue
                with contextlib.suppress(psutil.Error):
                    if marker in " ".join(psutil.Process(pid).cmdline()):
                        replacement = pid
                        break
        if replacement is None:
            missed += 1
        else:
            latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.1)
    return {
        "w4_restart_median_ms": statistics.median(latencies) if latencies else None,
        "w4_restart_max_ms": max(latencies) if latencies else None,
        "w4_missed": missed,
    }


STUBBORN = {
    "w5a": "trap '' TERM; sleep 1000 & sleep 1000",
    "w5b": "trap '' TERM; setsid sleep 1000 & sleep 1000",
}


def stubborn_stop(system: System, sizes: Sizes, variant: str) -> Metrics:
    """Workload 5: stop processes that ignore SIGTERM and have a grandchild (in the group,
    or gone to its own session with setsid) with a grace period; count what survives."""
    system.prepare([Proc("t", STUBBORN[variant], sizes.stubborn)], sizes.grace)
    system.start()
    wait_until_up(system, sizes.stubborn, 2 * sizes.stubborn, 60)
    time.sleep(0.3)
    tree = system.workload()  # the shells, their background sleeps and their own sleeps
    shells = [p for p in tree if p.name() == "sh"]
    started = time.perf_counter()
    system.stop()
    timeout = sizes.grace + 8
    with contextlib.suppress(BenchError):
        wait_for(lambda: not any(alive(p) for p in shells), timeout, "the shells", 0.005)
    elapsed = time.perf_counter() - started
    hung = system.stop_timed_out or any(alive(p) for p in shells)
    time.sleep(0.5)
    left = [p for p in tree if alive(p)]
    kill_processes(left)
    if hung:
        print(f"    {system.name} had not stopped {timeout:g}s after being asked to")
    return {
        f"{variant}_stop_s": None if hung else elapsed,
        f"{variant}_hung": int(hung),
        f"{variant}_left": len(left),
        f"{variant}_tree": len(tree),
    }
