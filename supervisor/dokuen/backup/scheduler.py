"""The backup scheduler, the I/O shell around schedule.py: one task in the daemon's task
group that sleeps until the next scheduled backup is due, runs it (one capture at a time
across all apps), deletes what the schedule no longer keeps, and records what happened.

A failure is loud: a line in the unified log, the app's ``backup-status.json``, and a
warning that every dokuenctl command prints until a later backup succeeds.
"""

import dataclasses
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any, Protocol

import anyio
import anyio.abc

from dokuen.backup.schedule import (
    BackupResult,
    BackupStatus,
    Capture,
    RunRecord,
    Schedule,
    after_run,
    expired_keys,
    local_zone,
    next_run,
    read_schedule,
    read_status,
    should_verify,
    warnings,
    when,
    write_schedule,
    write_status,
    zone_name,
)
from dokuen.backup.storage import Storage
from dokuen.errors import DokuenError
from dokuen.events import get_logger
from dokuen.store import Store

log = get_logger()

# A machine that slept or a clock that was set is noticed within this many seconds.
WAKE_SLICE = 60.0


class WallClock(Protocol):
    """Calendar time, for schedules (process.Clock is monotonic, for timeouts)."""

    @property
    def zone(self) -> tzinfo: ...

    def now(self) -> datetime: ...

    async def sleep_until(self, moment: datetime) -> None: ...


class SystemWallClock:
    def __init__(self, zone: tzinfo | None = None) -> None:
        self._zone = zone

    @property
    def zone(self) -> tzinfo:
        """The machine's, read at the first use: a daemon with no schedule never loads
        zoneinfo (0.3 MiB resident: tests/test_imports.py)."""
        if self._zone is None:
            self._zone = local_zone()
        return self._zone

    def now(self) -> datetime:
        return datetime.now(self.zone)

    async def sleep_until(self, moment: datetime) -> None:
        while (left := (moment - self.now()).total_seconds()) > 0:
            await anyio.sleep(min(left, WAKE_SLICE))


Event = Callable[[str, str], None]  # (app, message): a line in the unified log
OpenStorage = Callable[[], Storage]  # blocking; raises StorageError when there is no target


class BackupScheduler:
    """Every app's backup schedule and backup status, and the task that runs them."""

    def __init__(
        self,
        store: Store,
        capture: Capture,
        open_storage: OpenStorage,
        event: Event,
        clock: WallClock | None = None,
    ) -> None:
        self.store = store
        self._capture = capture
        self._open_storage = open_storage
        self._event = event
        self.clock = clock or SystemWallClock()
        self.lock = anyio.Lock()  # one scheduled capture at a time, across all apps
        self.schedules: dict[str, Schedule] = {}
        self.statuses: dict[str, BackupStatus] = {}
        self._changed = anyio.Event()

    def load(self) -> None:
        """Read every app's schedule and status (blocking); a broken schedule file is
        logged and that app left unscheduled, not allowed to stop the others."""
        for app in self.store.app_names():
            root = self.store.app(app).root
            self.statuses[app] = read_status(root)
            try:
                schedule = read_schedule(root)
            except (DokuenError, OSError) as exc:
                self._event(app, f"backup schedule ignored: {exc}")
                continue
            if schedule is not None:
                self.schedules[app] = schedule

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run scheduled backups as they come due, until cancelled."""
        await anyio.to_thread.run_sync(self.load)
        task_status.started()
        while True:
            self._changed = anyio.Event()
            if not self.schedules:  # nothing is due: the clock is not read until one is
                await self._sleep(None)
                continue
            now = self.clock.now()
            runs = self.next_runs(now)
            due = sorted((moment, app) for app, moment in runs.items() if moment <= now)
            if due:
                await self.run_scheduled(due[0][1])
                continue
            await self._sleep(min(runs.values(), default=None))

    async def _sleep(self, wake: datetime | None) -> None:
        """Until ``wake`` (None: forever), or until a schedule changes."""
        async with anyio.create_task_group() as group:

            async def until_changed() -> None:
                await self._changed.wait()
                group.cancel_scope.cancel()

            group.start_soon(until_changed)
            if wake is None:
                await anyio.sleep_forever()
            else:
                await self.clock.sleep_until(wake)
            group.cancel_scope.cancel()

    def next_runs(self, now: datetime) -> dict[str, datetime]:
        """When each scheduled app's next backup is due. A schedule that cannot say (a
        hand-edited expression that never comes due) is dropped, loudly, never allowed to
        stop the scheduler."""
        runs = {}
        for app, schedule in list(self.schedules.items()):
            try:
                runs[app] = next_run(schedule, self._last_run(app), now)
            except Exception as exc:  # croniter's errors, whatever the file held
                del self.schedules[app]
                log.error("backup.schedule_broken", app=app, error=str(exc))
                self._event(app, f"backup schedule ignored: {exc} (set it again)")
        return runs

    def _last_run(self, app: str) -> datetime | None:
        last = self.statuses.get(app, BackupStatus()).scheduled
        return last.at if last is not None else None

    async def run_scheduled(self, app: str) -> RunRecord:
        """Capture one scheduled backup of ``app`` now, prune, and record the outcome."""
        schedule = self.schedules[app]
        verify = should_verify(self.statuses.get(app, BackupStatus()).runs, schedule.verify_every)
        async with self.lock:
            started = self.clock.now()
            try:
                result = await self._capture(app, verify)
            except Exception as exc:  # a bug in one capture must not stop the scheduler
                record = self._failed(app, started, exc)
            else:
                record = await self._kept(app, started, result, schedule.keep)
        if app in self.schedules:  # not destroyed (or unscheduled) meanwhile
            status = after_run(self.statuses.get(app, BackupStatus()), record)
            await self._save(app, status)
        self._changed.set()
        return record

    def _failed(self, app: str, started: datetime, exc: Exception) -> RunRecord:
        if isinstance(exc, DokuenError):
            error = str(exc)
        else:
            log.exception("backup.scheduled_crashed", app=app)
            error = f"internal error in dokuend: {exc!r}"
        log.error("backup.scheduled_failed", app=app, error=error)
        self._event(app, f"scheduled backup FAILED: {error}")
        return RunRecord(started, ok=False, error=error)

    async def _kept(
        self, app: str, started: datetime, result: BackupResult, keep: int | None
    ) -> RunRecord:
        checked = ", verified by a restore" if result.verified else ""
        self._event(app, f"scheduled backup stored: {result.key} ({result.size} bytes{checked})")
        log.info("backup.scheduled", app=app, key=result.key, verified=result.verified)
        if keep is not None:
            try:
                deleted = await anyio.to_thread.run_sync(self._prune, app, keep)
            except Exception as exc:  # the target's errors, and any other: said, not fatal
                error = f"{result.key} was stored, but older backups could not be deleted: {exc}"
                self._event(app, f"scheduled backup FAILED: {error}")
                return RunRecord(started, ok=False, error=error, id=result.id)
            if deleted:
                self._event(app, f"deleted {len(deleted)} old backup files (keeping {keep})")
        return RunRecord(started, ok=True, id=result.id, verified=result.verified)

    def _prune(self, app: str, keep: int) -> list[str]:
        storage = self._open_storage()
        doomed = expired_keys(storage.keys(f"{app}/"), app, keep)
        for key in doomed:
            storage.delete(key)
        return doomed

    async def _save(self, app: str, status: BackupStatus) -> None:
        try:
            await anyio.to_thread.run_sync(write_status, self.store.app(app).root, status)
        except FileNotFoundError:
            pass  # the app was destroyed meanwhile
        except OSError as exc:  # a full disk must not stop the scheduler: it is said, kept here
            log.error("backup.status_unwritten", app=app, error=str(exc))
        self.statuses[app] = status

    # -- what the daemon asks of it ----------------------------------------------------------

    async def set_schedule(self, app: str, schedule: Schedule | None) -> None:
        """Keep ``schedule`` as the app's (None: no more scheduled backups)."""
        await anyio.to_thread.run_sync(write_schedule, self.store.app(app).root, schedule)
        if schedule is None:
            self.schedules.pop(app, None)
        else:
            self.schedules[app] = schedule
        self._changed.set()

    async def record_bundle(self, app: str, record: RunRecord) -> None:
        """Remember how the app's last repository bundle went (a failure warns)."""
        await self._save(app, dataclasses.replace(self.status(app), bundle=record))

    def rename(self, old: str, new: str) -> None:
        """The app was renamed (its schedule and status files moved with its directory)."""
        if old in self.schedules:
            self.schedules[new] = self.schedules.pop(old)
        if old in self.statuses:
            self.statuses[new] = self.statuses.pop(old)
        self._changed.set()

    def forget(self, app: str) -> None:
        """The app was destroyed: no schedule, no warnings about it."""
        self.schedules.pop(app, None)
        self.statuses.pop(app, None)
        self._changed.set()

    def status(self, app: str) -> BackupStatus:
        return self.statuses.get(app, BackupStatus())

    def warnings(self) -> list[str]:
        """What every dokuenctl command prints while a backup is failing."""
        return [line for app in sorted(self.statuses) for line in warnings(app, self.statuses[app])]

    def describe(self, app: str) -> dict[str, Any]:
        """The app's schedule, its next run and its last runs, for dokuenctl."""
        schedule = self.schedules.get(app)
        status = self.status(app)
        now = self.clock.now()
        return {
            "app": app,
            "schedule": None
            if schedule is None
            else {
                "cron": schedule.cron,
                "zone": zone_name(self.clock.zone),
                "keep": schedule.keep,
                "verify_every": schedule.verify_every,
                "since": when(schedule.since),
                "next_run": when(next_run(schedule, self._last_run(app), now)),
            },
            "runs": status.runs,
            "scheduled": _record_info(status.scheduled),
            "bundle": _record_info(status.bundle),
            "warnings": warnings(app, status),
        }


def _record_info(record: RunRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "at": when(record.at),
        "ok": record.ok,
        "error": record.error,
        "id": record.id,
        "verified": record.verified,
    }
