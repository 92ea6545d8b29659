"""Parked slots (supervise/parking.py): an idle process slot holds no task while its
process runs, and still sees everything a slot's task saw. Real processes on a real
spawner: an idle slot's task ends; its process's exit brings the slot back as a task that
restarts it, says why, then parks again; a stop of a parked slot stops the process, its
last line before "stopped"; a group that ends (the daemon's shutdown) stops every parked
process, and nothing parks in a group that is ending; a parked slot whose log delivery
fails ends alone, as a task's would, while another parked slot goes on."""

import asyncio
import os
import signal
import sys
from pathlib import Path

import anyio
import psutil
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
from tests.test_review_faults import TALKER, BrokenFor

pytestmark = pytest.mark.anyio

SLEEPER = "echo up; exec sleep 60"


def make_slot(
    app: str,
    mux: LogMux,
    ports: PortPool,
    home: Path,
    spawner: OsSpawner,
    parking: Parking,
    command: str = SLEEPER,
) -> ProcessSlot:
    feed = home / f"{app}.feed"
    if not feed.exists():
        os.mkfifo(feed)

    def environment(port: int) -> dict[str, str]:
        return {"PORT": str(port), "PATH": os.defpath, "TALKER": TALKER, "FEED": str(feed)}

    return ProcessSlot(
        SlotConfig(ProcessSpec(app, "worker", 1, command), home, environment, 2.0, RestartPolicy()),
        ports=ports,
        mux=mux,
        spawner=spawner,
        clock=SystemClock(),
        parking=parking,
    )


def tasks() -> int:
    return len(asyncio.all_tasks())


async def until(check: object, what: str) -> None:
    assert callable(check)
    while not check():
        await anyio.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_an_idle_slot_holds_no_task_and_its_exit_restarts_it(tmp_path: Path) -> None:
    log = tmp_path / "dokuen.log"
    mux = LogMux(log, max_bytes=1 << 30, keep=1)
    ports = PortPool(PortRange(20000, 20009), is_free=lambda _port: True)
    spawner = OsSpawner()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(mux.run)
            parking = Parking(tg)
            before = tasks()
            slots = [make_slot(f"a{n}", mux, ports, tmp_path, spawner, parking) for n in range(3)]
            for slot in slots:
                await tg.start(slot.run)
            await until(lambda: tasks() == before, "every slot parked")
            assert len(parking.parked) == 3
            assert all(slot.state is ProcessState.RUNNING for slot in slots)
            first = slots[0].pid
            assert first is not None
            os.kill(first, signal.SIGKILL)  # its exit wakes it: a task again, a restart
            await until(lambda: slots[0].pid not in (None, first), "restarted")
            await until(lambda: tasks() == before, "parked again")
            assert slots[0].restarts == 1
            assert slots[0].state is ProcessState.RUNNING
            assert gone(first)
            await until(lambda: b"killed by SIGKILL, restarting" in log.read_bytes(), "said")
            pids = [slot.pid for slot in slots]
            await slots[1].stop()  # a parked slot stops: its process with it
            assert slots[1].state is ProcessState.STOPPED
            assert slots[1].pid is None
            assert len(ports.taken) == 2  # its port went back
            assert gone(pids[1] or 0)
            assert len(parking.parked) == 2  # the other two
            for slot in (slots[0], slots[2]):
                await slot.stop()
            await mux.drained()
            tg.cancel_scope.cancel()
    text = log.read_text()
    assert text.index("a1[worker.1]: up") < text.index("a1[dokuen]: worker.1 stopped")
    assert "a0[dokuen]: worker.1 exited" not in text  # SIGKILL, from outside: "killed by"
    assert not spawner.live


async def test_the_end_of_the_group_stops_every_parked_process(tmp_path: Path) -> None:
    """As the app's group does on a shutdown: its cancellation, then ``close``: every
    parked slot becomes a task that the cancellation stops; nothing parks after that."""
    log = tmp_path / "dokuen.log"
    mux = LogMux(log, max_bytes=1 << 30, keep=1)
    ports = PortPool(PortRange(20000, 20009), is_free=lambda _port: True)
    spawner = OsSpawner()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as outer:
            await outer.start(mux.run)
            before = tasks()
            async with anyio.create_task_group() as tg:
                parking = Parking(tg)
                slots = [
                    make_slot(f"b{n}", mux, ports, tmp_path, spawner, parking) for n in range(3)
                ]
                for slot in slots:
                    await tg.start(slot.run)
                await until(lambda: tasks() == before, "parked")
                pids = [slot.pid or 0 for slot in slots]
                tg.cancel_scope.cancel()
                parking.close()
            assert all(slot.state is ProcessState.STOPPED for slot in slots)
            assert all(gone(pid) for pid in pids)
            assert not parking.parked
            late = make_slot("late", mux, ports, tmp_path, spawner, parking)
            async with anyio.create_task_group() as tg2:
                await tg2.start(late.run)  # its group's parking is closed: it stays a task
                await anyio.sleep(0.05)
                assert late.state is ProcessState.RUNNING
                assert not parking.parked
                tg2.cancel_scope.cancel()
            assert late.state is ProcessState.STOPPED
            await mux.drained()
            outer.cancel_scope.cancel()
    text = log.read_text()
    for n in range(3):
        assert f"b{n}[dokuen]: worker.1 stopped" in text
    assert not spawner.live


async def test_a_parked_slot_whose_delivery_fails_ends_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The intake's callback fails while the slot is parked (no task to cancel): the slot
    wakes into a task, stops its process and says so; the other parked slot goes on."""
    log = tmp_path / "dokuen.log"
    mux = BrokenFor(log, max_bytes=1 << 30, keep=1)
    ports = PortPool(PortRange(20000, 20009), is_free=lambda _port: True)
    spawner = OsSpawner()
    talker = f'exec {sys.executable} -c "$TALKER" < "$FEED"'
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(mux.run)
            parking = Parking(tg)
            before = tasks()
            bad = make_slot("bad", mux, ports, tmp_path, spawner, parking, talker)
            good = make_slot("good", mux, ports, tmp_path, spawner, parking, talker)
            await tg.start(bad.run)
            await tg.start(good.run)
            with open(tmp_path / "good.feed", "w") as good_feed:
                with open(tmp_path / "bad.feed", "w") as bad_feed:
                    await until(lambda: tasks() == before, "both parked")
                    bad_pid = bad.pid or 0
                    bad_feed.write("go wrong\n")
                    bad_feed.flush()
                    await until(lambda: bad.state is ProcessState.STOPPED, "bad ended")
                assert gone(bad_pid)
                good_feed.write("good still\n")
                good_feed.flush()
                await until(lambda: b"good still" in log.read_bytes(), "good's line")
                assert good.state is ProcessState.RUNNING
                await until(lambda: tasks() == before, "good parked")
                assert len(parking.parked) == 1
            await good.stop()
            await mux.drained()
            tg.cancel_scope.cancel()
    assert "bad[dokuen]: worker.1 supervisor failed" in log.read_text()
    assert "No space left on device" in capsys.readouterr().err
