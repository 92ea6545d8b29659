"""The backup scheduler's task against a fake wall clock, with a real capture that writes
real backups into a directory target: when it runs, once per missed stretch, one capture at
a time, retention, verification, and loud failures."""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

import anyio
import anyio.abc
import pytest

from dokuen.backup.schedule import (
    BackupResult,
    BackupStatus,
    RunRecord,
    make_schedule,
    unique_id,
    write_schedule,
    write_status,
)
from dokuen.backup.scheduler import BackupScheduler
from dokuen.backup.storage import DirectoryStorage, sha256_of
from dokuen.errors import DokuenError
from dokuen.store import Store

pytestmark = pytest.mark.anyio


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class FakeClock:
    """Calendar time that moves only when the test says so."""

    zone: tzinfo = UTC

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._moved = anyio.Event()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, moment: datetime) -> None:
        while self._now < moment:
            self._moved = anyio.Event()
            await self._moved.wait()

    def move_to(self, moment: datetime) -> None:
        self._now = moment
        self._moved.set()


@dataclass
class DumpCapture:
    """A capture like a database dump's: a real file and its manifest in the target."""

    target: DirectoryStorage
    clock: FakeClock
    scratch: Path
    calls: list[tuple[str, bool]] = field(default_factory=list)
    failing: str | None = None
    active: int = 0
    most_at_once: int = 0

    async def __call__(self, app: str, verify: bool) -> BackupResult:
        self.calls.append((app, verify))
        self.active += 1
        self.most_at_once = max(self.most_at_once, self.active)
        try:
            await anyio.sleep(0.01)  # another app's capture would start here if it could
            if self.failing:
                raise DokuenError(self.failing)
            taken = [key.split("/")[2].split(".")[0] for key in self.target.keys(f"{app}/db/")]
            backup = unique_id(self.clock.now(), taken)
            dump = self.scratch / f"{app}-{backup}.dump"
            dump.write_text(f"dump of {app} at {backup}\n")
            key = f"{app}/db/{backup}.dump"
            self.target.put(key, dump, sha256_of(dump))
            manifest = self.scratch / f"{app}-{backup}.json"
            manifest.write_text(json.dumps({"app": app, "id": backup}))
            self.target.put(f"{app}/db/{backup}.json", manifest, sha256_of(manifest))
            if verify:
                copy = self.scratch / "verify"
                self.target.get(key, copy)
                assert copy.read_bytes() == dump.read_bytes()
            return BackupResult(app, "db", backup, key, dump.stat().st_size, "-", verify or None)
        finally:
            self.active -= 1


@dataclass
class Harness:
    store: Store
    clock: FakeClock
    capture: DumpCapture
    scheduler: BackupScheduler
    events: list[tuple[str, str]]
    target: DirectoryStorage

    base_runs: int = 0  # the scheduled runs recorded before the test's own

    async def until(self, calls: int) -> None:
        """Poll (with a deadline) until ``calls`` scheduled runs were captured and recorded."""
        with anyio.fail_after(5):
            while self.recorded() < calls or len(self.capture.calls) < calls:
                await anyio.sleep(0.001)

    def recorded(self) -> int:
        return sum(status.runs for status in self.scheduler.statuses.values()) - self.base_runs


@pytest.fixture
async def harness(tmp_path: Path) -> Harness:
    store = Store(tmp_path / "home")
    for app in ("blog", "shop"):
        store.create(app)
    (tmp_path / "backups").mkdir()
    target = DirectoryStorage(f"file://{tmp_path}/backups", tmp_path / "backups")
    clock = FakeClock(at("2026-11-24 12:00"))
    (tmp_path / "scratch").mkdir()
    capture = DumpCapture(target, clock, tmp_path / "scratch")
    events: list[tuple[str, str]] = []
    scheduler = BackupScheduler(
        store, capture, lambda: target, lambda app, text: events.append((app, text)), clock
    )
    return Harness(store, clock, capture, scheduler, events, target)


async def start(harness: Harness, group: anyio.abc.TaskGroup) -> None:
    await group.start(harness.scheduler.run)
    harness.base_runs = harness.recorded()


async def test_runs_when_due_verifies_every_nth_and_keeps_the_newest(harness: Harness) -> None:
    async with anyio.create_task_group() as group:
        await start(harness, group)
        schedule = make_schedule("0 3 * * *", harness.clock.now(), keep=2, verify_every=2)
        await harness.scheduler.set_schedule("blog", schedule)
        for _ in range(10):
            await anyio.sleep(0)
        assert harness.capture.calls == []  # nothing due until 03:00
        for day, calls in ((25, 1), (26, 2), (27, 3)):
            harness.clock.move_to(at(f"2026-11-{day} 03:00:00"))
            await harness.until(calls)
        group.cancel_scope.cancel()
    assert harness.capture.calls == [("blog", True), ("blog", False), ("blog", True)]
    assert harness.target.keys("blog/") == [
        "blog/db/20261126T030000Z.dump",
        "blog/db/20261126T030000Z.json",
        "blog/db/20261127T030000Z.dump",
        "blog/db/20261127T030000Z.json",
    ]
    status = json.loads((harness.store.app("blog").root / "backup-status.json").read_text())
    assert status["runs"] == 3
    assert status["scheduled"] == {
        "at": "2026-11-27T03:00:00+00:00",
        "ok": True,
        "error": None,
        "id": "20261127T030000Z",
        "verified": True,
    }
    assert (
        "blog",
        "scheduled backup stored: blog/db/20261127T030000Z.dump (33 bytes, verified by a restore)",
    ) in harness.events
    assert ("blog", "deleted 2 old backup files (keeping 2)") in harness.events
    info = harness.scheduler.describe("blog")
    assert info["schedule"]["next_run"] == "2026-11-28 03:00:00+00:00"


async def test_a_run_missed_while_the_daemon_was_down_is_made_up_once(harness: Harness) -> None:
    root = harness.store.app("blog").root
    write_schedule(root, make_schedule("0 3 * * *", at("2026-11-01 00:00")))
    last = RunRecord(at("2026-11-21 03:00:02"), ok=True, id="20261121T030000Z")
    write_status(root, BackupStatus(runs=20, scheduled=last))
    harness.clock.move_to(at("2026-11-24 12:00"))  # three nights missed
    async with anyio.create_task_group() as group:
        await start(harness, group)
        await harness.until(1)
        for _ in range(50):
            await anyio.sleep(0)
        assert len(harness.capture.calls) == 1  # once, not three times
        assert harness.scheduler.describe("blog")["schedule"]["next_run"] == (
            "2026-11-25 03:00:00+00:00"
        )
        harness.clock.move_to(at("2026-11-25 03:00:01"))
        await harness.until(2)
        group.cancel_scope.cancel()
    assert [call[0] for call in harness.capture.calls] == ["blog", "blog"]


async def test_one_capture_at_a_time_across_apps(harness: Harness) -> None:
    async with anyio.create_task_group() as group:
        await start(harness, group)
        for app in ("blog", "shop"):
            schedule = make_schedule("*/5 * * * *", harness.clock.now())
            await harness.scheduler.set_schedule(app, schedule)
        harness.clock.move_to(at("2026-11-24 12:05"))
        await harness.until(2)
        group.cancel_scope.cancel()
    assert sorted(app for app, _ in harness.capture.calls) == ["blog", "shop"]
    assert harness.capture.most_at_once == 1


async def test_a_failure_is_loud_until_a_backup_succeeds(harness: Harness) -> None:
    harness.capture.failing = "cannot reach the S3 endpoint (is it running?)"
    async with anyio.create_task_group() as group:
        await start(harness, group)
        await harness.scheduler.set_schedule("blog", make_schedule("@hourly", harness.clock.now()))
        harness.clock.move_to(at("2026-11-24 13:00"))
        await harness.until(1)
        assert harness.scheduler.warnings() == [
            "the scheduled backup of blog failed at 2026-11-24 13:00:00+00:00: "
            "cannot reach the S3 endpoint (is it running?)"
        ]
        assert (
            "blog",
            "scheduled backup FAILED: cannot reach the S3 endpoint (is it running?)",
        ) in harness.events
        failed = json.loads((harness.store.app("blog").root / "backup-status.json").read_text())
        assert failed["scheduled"]["ok"] is False
        harness.capture.failing = None
        harness.clock.move_to(at("2026-11-24 14:00"))
        await harness.until(2)
        group.cancel_scope.cancel()
    assert harness.scheduler.warnings() == []


async def test_a_schedule_turned_off_does_not_run(harness: Harness) -> None:
    async with anyio.create_task_group() as group:
        await start(harness, group)
        await harness.scheduler.set_schedule("blog", make_schedule("@hourly", harness.clock.now()))
        await harness.scheduler.set_schedule("blog", None)
        assert not (harness.store.app("blog").root / "backup-schedule.json").exists()
        harness.clock.move_to(harness.clock.now() + timedelta(hours=3))
        for _ in range(50):
            await anyio.sleep(0)
        group.cancel_scope.cancel()
    assert harness.capture.calls == []
