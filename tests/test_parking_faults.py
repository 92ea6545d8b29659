"""Parked slots (supervise/parking.py) attacked with real processes on a real spawner: a
process that exits in the instant it parks, a crash loop whose backoff runs between parked
lives, a stop racing the wake-up at every step of it, sixty parked processes killed in
the same moment, and a parked process whose pipe fills: every exit restarted per the
policy, every stop final, no task, descriptor or process left, every line whole and once."""

import contextlib
import os
import select
import signal
import sys
import threading
from pathlib import Path

import anyio
import pytest

from dokuen.settings import PortRange
from dokuen.supervise.clock import SystemClock
from dokuen.supervise.formation import ProcessSpec
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.parking import Parking
from dokuen.supervise.ports import PortPool
from dokuen.supervise.process import ProcessSlot, ProcessState, SlotConfig
from dokuen.supervise.restart import RestartPolicy
from dokuen.supervise.spawn import OsSpawner
from tests.test_parking import gone, tasks, until

pytestmark = pytest.mark.anyio

LIMIT = 4
FAST = RestartPolicy(first_delay=0.01, max_delay=0.04, fast_failure=5.0, limit=LIMIT)


def slot(
    app: str,
    mux: LogMux,
    ports: PortPool,
    home: Path,
    spawner: OsSpawner,
    parking: Parking,
    command: str = "echo up; exec sleep 60",
    policy: RestartPolicy = RestartPolicy(),  # noqa: B008 (frozen)
) -> ProcessSlot:
    def environment(port: int) -> dict[str, str]:
        return {"PORT": str(port), "PATH": os.defpath, "PYTHON": sys.executable}

    config = SlotConfig(ProcessSpec(app, "worker", 1, command), home, environment, 2.0, policy)
    return ProcessSlot(
        config, ports=ports, mux=mux, spawner=spawner, clock=SystemClock(), parking=parking
    )


def descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def ups(log: Path) -> int:
    return log.read_bytes().count(b"[worker.1]: up\n") if log.exists() else 0


def pool(size: int = 100) -> PortPool:
    return PortPool(PortRange(21000, 21000 + size - 1), is_free=lambda _port: True)


async def test_exits_as_it_parks_and_a_crash_loop_between_parked_lives(tmp_path: Path) -> None:
    """``exit 3`` at once, often before the slot has parked: each exit is seen once, the
    backoff doubles per the policy, and at its limit the slot is CRASHED (a task that waits
    for a restart: the one task it keeps) with nothing parked and nothing running."""
    log = tmp_path / "dokuen.log"
    mux = LogMux(log, max_bytes=1 << 30, keep=1)
    spawner = OsSpawner()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(mux.run)
            parking = Parking(tg)
            before, fds = tasks(), descriptors()
            looping = slot("loop", mux, pool(), tmp_path, spawner, parking, "echo up; exit 3", FAST)
            await tg.start(looping.run)
            await until(lambda: looping.state is ProcessState.CRASHED, "crashed")
            assert looping.restarts == LIMIT - 1
            assert not parking.parked
            assert not spawner.live
            assert tasks() == before + 1
            await looping.stop()
            assert tasks() == before
            await mux.drained()
            assert descriptors() == fds
            tg.cancel_scope.cancel()
    text = log.read_text()
    assert text.count("loop[worker.1]: up") == LIMIT
    assert text.count("exited with code 3, restarting in") == LIMIT - 1
    delays = [line.rsplit(" ", 1)[1] for line in text.splitlines() if "restarting in" in line]
    assert delays == ["0.01s", "0.02s", "0.04s"]
    assert "crashed after 4 fast failures in a row, not restarting" in text


@pytest.mark.parametrize("steps", range(7))
async def test_a_stop_racing_the_wake_up_is_final(tmp_path: Path, steps: int) -> None:
    """The process killed, then a stop ``steps`` turns of the loop later: anywhere between
    the pidfd's callback, the new task's start and its backoff. The slot ends STOPPED, its
    process gone, nothing restarted after the stop, no task or descriptor left."""
    log = tmp_path / "dokuen.log"
    mux = LogMux(log, max_bytes=1 << 30, keep=1)
    spawner = OsSpawner()
    ports = pool()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(mux.run)
            parking = Parking(tg)
            before, fds = tasks(), descriptors()
            racing = slot("race", mux, ports, tmp_path, spawner, parking)
            await tg.start(racing.run)
            await until(lambda: tasks() == before, "parked")
            pid = racing.pid or 0
            os.kill(pid, signal.SIGKILL)
            for _ in range(steps):
                await anyio.sleep(0)
            await racing.stop()
            assert racing.state is ProcessState.STOPPED
            assert racing.pid is None
            await anyio.sleep(0.2)  # longer than the backoff: no restart comes after all
            assert not spawner.live
            assert gone(pid)
            assert racing.state is ProcessState.STOPPED
            assert not parking.parked
            assert not ports.taken
            assert tasks() == before
            await mux.drained()
            assert descriptors() == fds
            tg.cancel_scope.cancel()
    assert log.read_text().count("worker.1 started") == 1  # and never again after the stop


async def test_sixty_parked_processes_killed_at_once_each_restart_once(tmp_path: Path) -> None:
    count = 60
    log = tmp_path / "dokuen.log"
    mux = LogMux(log, max_bytes=1 << 30, keep=1)
    spawner = OsSpawner()
    ports = pool()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(mux.run)
            parking = Parking(tg)
            before, fds = tasks(), descriptors()
            slots = [slot(f"m{n}", mux, ports, tmp_path, spawner, parking) for n in range(count)]
            for each in slots:
                await tg.start(each.run)
            await until(lambda: tasks() == before, "all parked")
            assert len(parking.parked) == count
            parked_fds = descriptors()
            await until(lambda: ups(log) == count, "every first life's line")
            first = [each.pid or 0 for each in slots]
            for pid in first:  # in one turn of the loop: every pidfd readable together
                os.kill(pid, signal.SIGKILL)
            await until(lambda: all(each.restarts == 1 for each in slots), "every restart")
            await until(lambda: tasks() == before, "all parked again")
            await until(lambda: len(parking.parked) == count, "all parked again")
            assert all(each.state is ProcessState.RUNNING for each in slots)
            assert all(gone(pid) for pid in first)
            assert not {each.pid for each in slots} & set(first)
            assert len(spawner.live) == count
            assert descriptors() == parked_fds
            await until(lambda: ups(log) == 2 * count, "every second life's line")
            for each in slots:
                await each.stop()
            assert tasks() == before
            await mux.drained()
            assert descriptors() == fds
            tg.cancel_scope.cancel()
    text = log.read_text()
    assert text.count("worker.1 killed by SIGKILL, restarting") == count
    assert text.count("[worker.1]: up") == 2 * count
    assert not spawner.live


WRITER = """
import sys, time
line = "{:07d} " + "x" * 300 + "\\n"
for n in range(40000):  # 12 MiB, much more than the pipe holds: the writer waits
    sys.stdout.write(line.format(n))
sys.stdout.flush()
print("huge " + "y" * 200000, flush=True)  # longer than a line may be: cut in pieces
print("done", flush=True)
time.sleep(60)
"""


async def test_a_parked_process_that_fills_its_pipe_loses_and_breaks_no_line(
    tmp_path: Path,
) -> None:
    log = tmp_path / "dokuen.log"
    mux = LogMux(log, max_bytes=1 << 30, keep=1)
    spawner = OsSpawner()
    (tmp_path / "writer.py").write_text(WRITER)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(mux.run)
            parking = Parking(tg)
            before = tasks()
            writer = slot("w", mux, pool(), tmp_path, spawner, parking, '"$PYTHON" writer.py')
            await tg.start(writer.run)
            await until(lambda: len(parking.parked) == 1, "parked while it writes")
            await until(lambda: b"w[worker.1]: done" in log.read_bytes(), "every line")
            assert tasks() == before
            assert writer.restarts == 0
            await writer.stop()
            await mux.drained()
            tg.cancel_scope.cancel()
    text = log.read_text().splitlines()
    lines = [line.split(": ", 1)[1] for line in text if "w[worker.1]" in line]
    numbered = [line for line in lines if line[:1].isdigit()]
    assert numbered == [f"{n:07d} " + "x" * 300 for n in range(40000)]
    pieces = [line for line in lines if line.startswith(("huge", "[continued]"))]
    assert len(pieces) == 4  # 64 KiB at most each, marked as cut (supervise/lines.py)
    joined = "".join(
        p.removeprefix("[continued] ").removesuffix(" [line continues]") for p in pieces
    )
    assert joined == "huge " + "y" * 200000
    assert lines[-1] == "done"


async def test_two_stops_and_an_exit_at_once_end_a_parked_slot_once(tmp_path: Path) -> None:
    """A scale-down and a destroy racing each other on a parked slot whose process exits at
    the same moment: one wake-up, one end, both stops return, nothing restarted."""
    log = tmp_path / "dokuen.log"
    mux = LogMux(log, max_bytes=1 << 30, keep=1)
    spawner = OsSpawner()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(mux.run)
            parking = Parking(tg)
            before = tasks()
            twice = slot("twice", mux, pool(), tmp_path, spawner, parking)
            await tg.start(twice.run)
            await until(lambda: tasks() == before, "parked")
            os.kill(twice.pid or 0, signal.SIGKILL)
            async with anyio.create_task_group() as stops:
                stops.start_soon(twice.stop)
                stops.start_soon(twice.stop)
            await anyio.sleep(0.2)
            assert twice.state is ProcessState.STOPPED
            assert not spawner.live
            assert tasks() == before
            await mux.drained()
            tg.cancel_scope.cancel()
    assert log.read_text().count("worker.1 started") == 1


def in_write(pid: int) -> bool:
    """Whether ``pid`` waits in write(2) (its pipe full: nobody reads it)."""
    try:
        return Path(f"/proc/{pid}/syscall").read_text().split()[0] == "1"
    except (OSError, IndexError):
        return False


class Drain(threading.Thread):
    """Reads the log's FIFO once ``release``d, until ``halt``: the disk that answers again
    (and keeps answering through the test's teardown, whose last lines go there too)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.received = bytearray()
        self.release, self.halt = threading.Event(), threading.Event()

    def run(self) -> None:
        self.release.wait()
        while not self.halt.is_set():
            if select.select([self.fd], [], [], 0.05)[0]:
                with contextlib.suppress(BlockingIOError):
                    self.received.extend(os.read(self.fd, 1 << 20))

    def stop(self) -> bytes:
        self.release.set()
        self.halt.set()
        self.join(10)
        os.close(self.fd)
        return bytes(self.received)


async def test_a_parked_writer_waits_while_the_log_is_stuck_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """The unified log's writer stuck (its file a FIFO nobody drains: a disk that does not
    answer): the log falls behind, the intake stops reading the parked process's pipe, the
    process waits in its write, its slot stays parked; once the log moves, every line
    arrives whole, once, in order."""
    log = tmp_path / "dokuen.log"
    os.mkfifo(log)
    drain = Drain(log)
    drain.start()
    mux = LogMux(log, max_bytes=1 << 40, keep=1, high_water=256 << 10)
    spawner = OsSpawner()
    (tmp_path / "writer.py").write_text(WRITER)
    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                await tg.start(mux.run)
                parking = Parking(tg)
                before = tasks()
                writer = slot("w", mux, pool(), tmp_path, spawner, parking, '"$PYTHON" writer.py')
                await tg.start(writer.run)
                try:
                    blocked = lambda: mux.behind and in_write(writer.pid or 0)  # noqa: E731
                    await until(blocked, "the log behind, the writer blocked")
                    assert tasks() == before  # parked all the while
                    assert len(parking.parked) == 1
                finally:  # a failure too: the teardown's lines must get through
                    drain.release.set()
                await until(lambda: b"w[worker.1]: done\n" in drain.received, "every line")
                assert writer.state is ProcessState.RUNNING
                assert writer.restarts == 0
                await writer.stop()
                await mux.drained()
                tg.cancel_scope.cancel()
    finally:
        received = drain.stop()
    text = received.decode().splitlines()
    lines = [line.split(": ", 1)[1] for line in text if "w[worker.1]" in line]
    assert [line for line in lines if line[:1].isdigit()] == [
        f"{n:07d} " + "x" * 300 for n in range(40000)
    ]
