"""A process slot's supervision logic, against a fake spawner and a fake clock."""

import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from dokuen.isolate.cgroups import Group
from dokuen.settings import PortRange
from dokuen.supervise import ending
from dokuen.supervise.formation import ProcessSpec
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.ports import PortPool
from dokuen.supervise.process import ProcessSlot, ProcessState, SlotConfig
from dokuen.supervise.restart import RestartPolicy

pytestmark = pytest.mark.anyio


class FakeChild:
    """A child that exits when told to, or when signalled (unless it ignores SIGTERM)."""

    def __init__(
        self,
        pid: int,
        output: bytes,
        exit_status: int | None,
        ignore_term: bool,
        unkillable: bool = False,
    ) -> None:
        self.pid = pid
        self.unkillable = unkillable  # as a process in uninterruptible sleep (state D)
        self.signals: list[int] = []
        self._output = [output] if output else []
        self._exited = anyio.Event()
        self._status = 0
        self._ignore_term = ignore_term
        if exit_status is not None:
            self.exit(exit_status)

    def exit(self, status: int) -> None:
        self._status = status
        self._exited.set()

    def outlet(self) -> None:
        return None  # read with read(): the intake's fallback

    async def read(self, max_bytes: int) -> bytes:
        if self._output:
            return self._output.pop(0)
        await self._exited.wait()
        return b""

    async def wait(self) -> int:
        await self._exited.wait()
        return self._status

    def signal_group(self, signum: int) -> None:
        self.signals.append(signum)
        if self.unkillable:
            return
        if signum == signal.SIGKILL or not self._ignore_term:
            self.exit(-signum)

    def exit_fd(self) -> None:
        return None  # waited for by wait() only: the slot never parks

    def group_alive(self) -> bool:
        return not self._exited.is_set()

    def leftovers(self, app: str, dyno: str) -> list[psutil.Process]:
        return []

    async def aclose(self) -> None:
        pass


class FakeSpawner:
    """Hands out FakeChild objects; each exits at once with ``exit_status`` unless None."""

    def __init__(
        self,
        exit_status: int | None = None,
        output: bytes = b"",
        ignore_term: bool = False,
        unkillable: bool = False,
    ) -> None:
        self.unkillable = unkillable
        self.exit_status = exit_status
        self.output = output
        self.ignore_term = ignore_term
        self.children: list[FakeChild] = []
        self.envs: list[dict[str, str]] = []
        self.spawned = anyio.Event()

    async def __call__(
        self,
        command: str,
        env: Mapping[str, str],
        cwd: Path,
        *,
        user: int | None = None,
        cgroup: Group | None = None,
    ) -> FakeChild:
        child = FakeChild(
            1000 + len(self.children),
            self.output,
            self.exit_status,
            self.ignore_term,
            self.unkillable,
        )
        self.children.append(child)
        self.envs.append(dict(env))
        self.spawned.set()
        self.spawned = anyio.Event()
        return child


class FakeClock:
    """Virtual time: sleeping records the delay and moves the clock on at once."""

    def __init__(self) -> None:
        self.time = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds
        await anyio.lowlevel.checkpoint()


def make_slot(
    tmp_path: Path,
    spawner: FakeSpawner,
    clock: FakeClock,
    policy: RestartPolicy | None = None,
    stop_timeout: float = 0.2,
    ports: PortPool | None = None,
) -> tuple[ProcessSlot, LogMux]:
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 30, keep=1)
    spec = ProcessSpec("blog", "web", 1, "./server")

    def environment(port: int) -> dict[str, str]:
        return {"PORT": str(port)}

    slot = ProcessSlot(
        SlotConfig(spec, tmp_path, environment, stop_timeout, policy or RestartPolicy()),
        ports=ports or PortPool(PortRange(20000, 20009), is_free=lambda _port: True),
        mux=mux,
        spawner=spawner,
        clock=clock,
    )
    return slot, mux


async def wait_for_state(slot: ProcessSlot, state: ProcessState) -> None:
    with anyio.fail_after(5):
        while slot.state is not state:
            await anyio.sleep(0.001)


async def test_crash_loop_backs_off_then_is_crashed(tmp_path: Path) -> None:
    spawner, clock = FakeSpawner(exit_status=1), FakeClock()
    slot, mux = make_slot(tmp_path, spawner, clock, RestartPolicy(limit=4))
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(slot.run)
        await wait_for_state(slot, ProcessState.CRASHED)
        assert clock.sleeps == [0.1, 0.2, 0.4]
        assert len(spawner.children) == 4
        assert slot.restarts == 3
        await slot.stop()
        tg.cancel_scope.cancel()
    log = (tmp_path / "dokuen.log").read_text()
    assert "blog[dokuen]: web.1 exited with code 1, restarting in 0.1s" in log
    assert "restarting in 0.4s" in log
    assert "crashed after 4 fast failures in a row" in log


async def test_backoff_is_capped_and_retry_forever_never_crashes(tmp_path: Path) -> None:
    spawner, clock = FakeSpawner(exit_status=3), FakeClock()
    slot, mux = make_slot(tmp_path, spawner, clock, RestartPolicy(limit=None, max_delay=1.0))
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(slot.run)
        with anyio.fail_after(5):
            while len(clock.sleeps) < 12:
                await anyio.sleep(0.001)
        assert slot.state is not ProcessState.CRASHED
        assert clock.sleeps[:5] == [0.1, 0.2, 0.4, 0.8, 1.0]
        assert max(clock.sleeps) == 1.0
        await slot.stop()
        tg.cancel_scope.cancel()


async def test_a_process_that_was_up_restarts_at_once_on_the_same_port(tmp_path: Path) -> None:
    spawner, clock = FakeSpawner(), FakeClock()
    slot, mux = make_slot(tmp_path, spawner, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(slot.run)
        first_port = slot.port
        clock.time += 5  # up for five seconds, then killed
        spawned = spawner.spawned
        spawner.children[0].exit(-signal.SIGKILL)
        with anyio.fail_after(5):
            await spawned.wait()
        assert clock.sleeps == [0.0]
        assert slot.port == first_port
        assert spawner.envs[1]["PORT"] == str(first_port)
        assert slot.restarts == 1
        await slot.stop()
        tg.cancel_scope.cancel()
    assert "web.1 killed by SIGKILL, restarting in 0s" in (tmp_path / "dokuen.log").read_text()


async def test_stop_sends_sigterm_to_the_group_and_releases_the_port(tmp_path: Path) -> None:
    spawner, clock = FakeSpawner(output=b"hello\nlast words without newline"), FakeClock()
    ports = PortPool(PortRange(20000, 20009), is_free=lambda _port: True)
    slot, mux = make_slot(tmp_path, spawner, clock, ports=ports)
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(slot.run)
        assert slot.port in ports.taken
        await slot.stop()
        assert spawner.children[0].signals == [signal.SIGTERM]
        assert slot.state is ProcessState.STOPPED
        assert ports.taken == set()
        tg.cancel_scope.cancel()
    log = (tmp_path / "dokuen.log").read_text()
    assert "blog[web.1]: hello\n" in log
    assert "blog[web.1]: last words without newline\n" in log
    assert "web.1 stopped (killed by SIGTERM)" in log


async def test_a_process_that_ignores_sigterm_gets_sigkill_after_the_grace(tmp_path: Path) -> None:
    spawner, clock = FakeSpawner(ignore_term=True), FakeClock()
    slot, mux = make_slot(tmp_path, spawner, clock, stop_timeout=0.05)
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(slot.run)
        await slot.stop()
        assert spawner.children[0].signals == [signal.SIGTERM, signal.SIGKILL]
        tg.cancel_scope.cancel()
    log = (tmp_path / "dokuen.log").read_text()
    assert "did not stop within 0.05s of SIGTERM, sent SIGKILL" in log
    assert "stopped (killed by SIGKILL)" in log


async def test_a_process_sigkill_does_not_end_is_reported_stuck_and_stop_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision logic only (a fake child that ignores SIGKILL, as one in state D does);
    tests/e2e/test_stuck.py makes a real D-state process on a FUSE mount."""
    monkeypatch.setattr(ending, "KILL_WAIT", 0.05)
    spawner, clock = FakeSpawner(unkillable=True), FakeClock()
    ports = PortPool(PortRange(20000, 20009), is_free=lambda _port: True)
    slot, mux = make_slot(tmp_path, spawner, clock, stop_timeout=0.05, ports=ports)
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(slot.run)
        with anyio.fail_after(5):  # does not hang
            await slot.stop()
        child = spawner.children[0]
        assert child.signals == [signal.SIGTERM, signal.SIGKILL]
        assert slot.state is ProcessState.STUCK
        assert slot.info()["state"] == "stuck"
        assert slot.info()["pid"] == child.pid
        assert ports.taken == set()  # the port is checked by binding before it is reused
        child.exit(-signal.SIGKILL)  # the kernel ends it at last
        with anyio.fail_after(5):
            await slot.reap()
        assert (slot.info()["state"], slot.pid) == ("stopped", None)
        tg.cancel_scope.cancel()
    log = (tmp_path / "dokuen.log").read_text()
    assert "web.1 is stuck in uninterruptible sleep (state D): SIGKILL did not end it" in log
    assert "web.1 (stuck) is gone at last (killed by SIGKILL)" in log
    assert "stopped (killed" not in log


async def test_a_first_spawn_failure_reaches_the_caller(tmp_path: Path) -> None:
    class BrokenSpawner(FakeSpawner):
        async def __call__(
            self,
            command: str,
            env: Mapping[str, str],
            cwd: Path,
            *,
            user: int | None = None,
            cgroup: Group | None = None,
        ) -> Any:
            raise FileNotFoundError("/bin/sh")

    slot, mux = make_slot(tmp_path, BrokenSpawner(), FakeClock())
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        with pytest.raises(FileNotFoundError):
            await tg.start(slot.run)
        assert slot.state is ProcessState.STOPPED
        tg.cancel_scope.cancel()


async def test_info_reports_what_ps_shows(tmp_path: Path) -> None:
    spawner, clock = FakeSpawner(), FakeClock()
    slot, mux = make_slot(tmp_path, spawner, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(slot.run)
        clock.time += 12.5
        info = slot.info()
        assert info == {
            "app": "blog",
            "name": "web.1",
            "type": "web",
            "index": 1,
            "command": "./server",
            "pid": 1000,
            "port": slot.port,
            "state": "running",
            "restarts": 0,
            "uptime": 12.5,
        }
        await slot.stop()
        tg.cancel_scope.cancel()


async def test_no_free_port_on_a_restart_is_a_failed_start_not_a_dead_slot(
    tmp_path: Path,
) -> None:
    free = {"port": True}
    ports = PortPool(PortRange(20000, 20000), is_free=lambda _port: free["port"])
    spawner, clock = FakeSpawner(), FakeClock()
    forever = RestartPolicy(limit=None)  # virtual time runs fast: never give up meanwhile
    slot, mux = make_slot(tmp_path, spawner, clock, forever, ports=ports)
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        await tg.start(slot.run)
        free["port"] = False  # something else took it while the process ran
        spawner.children[0].exit(1)
        with anyio.fail_after(5):
            while len(clock.sleeps) < 2:
                await anyio.sleep(0.001)
        assert len(spawner.children) == 1  # no start without a port
        free["port"] = True
        with anyio.fail_after(5):
            while len(spawner.children) < 2:
                await anyio.sleep(0.001)
        assert slot.state is ProcessState.RUNNING
        assert spawner.envs[1]["PORT"] == "20000"
        await slot.stop()
        tg.cancel_scope.cancel()
    log = (tmp_path / "dokuen.log").read_text()
    assert "web.1 failed to start: no free port in 20000-20000" in log
