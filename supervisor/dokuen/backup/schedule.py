"""Backup schedules, the pure core: when an app's next backup is due, which backups to keep,
which to verify, and what to warn about. Plain functions over frozen dataclasses; the files
they are kept in are read and written here too (small JSON files), and scheduler.py is the
task that acts on them.

    $DOKUEN_HOME/apps/APP/backup-schedule.json  {"cron": "0 3 * * *", "keep": 7, ...}
    $DOKUEN_HOME/apps/APP/backup-status.json    the last scheduled run, the last bundle

Backups in the target are ``APP/KIND/ID.EXT``: KIND ``db`` (database dumps, ``ID.dump``) or
``repo`` (git bundles, ``ID.bundle``), each with its manifest ``ID.json``; ID is the UTC time
it was taken, ``20261125T030000Z``, so that IDs sort in time order.
"""

import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from dokuen.errors import InvalidName, SettingsError
from dokuen.store import write_atomic

SCHEDULE_FILE = "backup-schedule.json"
STATUS_FILE = "backup-status.json"
MACROS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
ID_FORMAT = "%Y%m%dT%H%M%SZ"
KINDS = ("db", "repo")


@dataclass(frozen=True)
class BackupResult:
    """One stored backup: ``APP/KIND/ID.*`` in the target."""

    app: str
    kind: str  # "db" or "repo"
    id: str
    key: str  # the data object (the dump or the bundle); its manifest is APP/KIND/ID.json
    size: int
    sha256: str
    verified: bool | None = None  # True: restored from the target and checked; None: not tried


# What a scheduled run calls: (app, verify) -> the backup it stored. It raises DokuenError
# (with a message that names the fix) when nothing was stored or the verification failed.
Capture = Callable[[str, bool], Awaitable[BackupResult]]


@dataclass(frozen=True)
class Schedule:
    """An app's backup schedule. ``since``: when it was set (runs due before it were never
    missed); ``keep``: how many backups of each kind to keep (None: all); ``verify_every``:
    verify the 1st, the (N+1)th, ... scheduled backup (1: each one)."""

    cron: str
    since: datetime
    keep: int | None = None
    verify_every: int = 1


@dataclass(frozen=True)
class RunRecord:
    """One backup attempt: when, whether it stored a backup, which, or why not."""

    at: datetime
    ok: bool
    error: str | None = None
    id: str | None = None
    verified: bool | None = None


@dataclass(frozen=True)
class BackupStatus:
    """What an app's backups last did: ``runs`` scheduled attempts so far, the last of them,
    and the last repository bundle (after a push or on demand)."""

    runs: int = 0
    scheduled: RunRecord | None = None
    bundle: RunRecord | None = None


# -- cron ----------------------------------------------------------------------------------


def check_cron(text: str) -> str:
    """Return ``text`` if it is a five-field cron expression or a macro like ``@daily``.

    Raises:
        InvalidName: anything else, naming the expected form.
    """
    expression = " ".join(text.split())
    fields = expression.split(" ")
    usage = (
        f"invalid cron expression {text!r} (use five fields, minute hour day month weekday, "
        'e.g. "0 3 * * *" for 03:00 every day, or @daily, @hourly, @weekly)'
    )
    if not (len(fields) == 5 or expression in MACROS):
        raise InvalidName(usage)
    try:
        # It must also come due: "0 0 31 2 *" parses, and then never matches.
        _cron(expression, datetime.now(UTC)).get_next(datetime)
        _cron(expression, datetime.now(UTC)).get_prev(datetime)
    except (ValueError, KeyError):  # croniter's errors are ValueErrors
        raise InvalidName(usage) from None
    return expression


def make_schedule(
    cron: str, since: datetime, keep: int | None = None, verify_every: int = 1
) -> Schedule:
    """A checked schedule. Raises InvalidName for a bad cron expression or count."""
    if keep is not None and keep < 1:
        raise InvalidName(f"cannot keep {keep} backups (keep at least 1, or leave --keep out)")
    if verify_every < 1:
        raise InvalidName(f"cannot verify every {verify_every}th backup (use 1 for each one)")
    return Schedule(check_cron(cron), since, keep, verify_every)


def _cron(expression: str, start: datetime) -> Any:
    """croniter, imported when a schedule is first read (a daemon without one never does)."""
    from croniter import croniter  # noqa: PLC0415

    return croniter(expression, start)


def latest_due(cron: str, now: datetime) -> datetime:
    """The most recent time at or before ``now`` the schedule was due (in ``now``'s zone)."""
    # croniter's get_prev is strictly before its start: start from the next whole minute.
    start = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    due: datetime = _cron(cron, start).get_prev(datetime)
    return due.astimezone(UTC)


def next_run(schedule: Schedule, last_run: datetime | None, now: datetime) -> datetime:
    """When the next scheduled backup should run: ``now`` if one came due since the last
    run (or since the schedule was set) without running -- the daemon was down or busy; made
    up once however many were missed -- else the next due time after ``now``."""
    # Compared and returned in UTC: two times in one zone compare by the clock on the wall,
    # and on the night it goes back 02:30+01:00 would look earlier than 02:30:05+02:00.
    anchor = max(schedule.since, last_run) if last_run is not None else schedule.since
    if latest_due(schedule.cron, now) > anchor.astimezone(UTC):
        return now.astimezone(UTC)
    following: datetime = _cron(schedule.cron, now).get_next(datetime)
    return following.astimezone(UTC)


def should_verify(runs: int, every: int) -> bool:
    """Whether scheduled run number ``runs`` (0 for the first) is verified: the first one,
    then every ``every``-th."""
    return runs % max(every, 1) == 0


# -- backup IDs and retention ----------------------------------------------------------------


def backup_id(now: datetime) -> str:
    return now.astimezone(UTC).strftime(ID_FORMAT)


def unique_id(now: datetime, taken: Iterable[str]) -> str:
    """The ID for a backup taken at ``now``, a second later for each one already ``taken``
    (two captures within a second get IDs of their own)."""
    used = set(taken)
    moment = now.astimezone(UTC).replace(microsecond=0)
    while (candidate := backup_id(moment)) in used:
        moment += timedelta(seconds=1)
    return candidate


def split_key(key: str) -> tuple[str, str, str] | None:
    """``APP/KIND/ID.EXT`` -> ``(APP, KIND, ID)``, or None for any other key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[1] not in KINDS:
        return None
    backup, dot, _ext = parts[2].partition(".")
    try:
        datetime.strptime(backup, ID_FORMAT)
    except ValueError:
        return None
    return (parts[0], parts[1], backup) if dot else None


def ids_of(keys: Iterable[str], app: str, kind: str) -> list[str]:
    """The IDs of the app's backups of one kind, oldest first."""
    found = {split[2] for key in keys if (split := split_key(key)) and split[:2] == (app, kind)}
    return sorted(found)


def expired_keys(keys: Iterable[str], app: str, keep: int) -> list[str]:
    """The keys to delete so that only the ``keep`` newest backups of each kind remain:
    each backup's manifest first (so a backup that is half deleted is no longer listed)."""
    keys = list(keys)
    doomed = []
    for kind in KINDS:
        backups: dict[str, list[str]] = {}
        for key in keys:
            split = split_key(key)
            if split is not None and split[:2] == (app, kind):
                backups.setdefault(split[2], []).append(key)
        # Only complete backups (with their manifest) count and go; a file without one may
        # be an upload under way, and is left alone.
        ids = sorted(i for i, found in backups.items() if f"{app}/{kind}/{i}.json" in found)
        for backup in ids[: max(len(ids) - keep, 0)]:
            manifest = f"{app}/{kind}/{backup}.json"
            doomed += sorted(backups[backup], key=lambda key: key != manifest)
    return doomed


# -- what to warn about --------------------------------------------------------------------


def when(moment: datetime) -> str:
    """``2026-11-25 03:00:00+01:00``: what a person reads."""
    return moment.isoformat(sep=" ", timespec="seconds")


def warnings(app: str, status: BackupStatus) -> list[str]:
    """Lines for every dokuenctl command to print while the app's last backup failed."""
    found = []
    if status.scheduled is not None and not status.scheduled.ok:
        found.append(
            f"the scheduled backup of {app} failed at {when(status.scheduled.at)}: "
            f"{status.scheduled.error}"
        )
    if status.bundle is not None and not status.bundle.ok:
        found.append(
            f"the repository backup of {app} failed at {when(status.bundle.at)}: "
            f"{status.bundle.error}"
        )
    return found


# -- the files -----------------------------------------------------------------------------


# Field by field, not dataclasses.asdict: that deep-copies the datetimes, and a zone read
# from /etc/localtime cannot be copied.


def _schedule_json(schedule: Schedule) -> str:
    data = {
        "cron": schedule.cron,
        "since": schedule.since.isoformat(),
        "keep": schedule.keep,
        "verify_every": schedule.verify_every,
    }
    return json.dumps(data, indent=2) + "\n"


def _record(data: Any) -> RunRecord | None:
    if data is None:
        return None
    return RunRecord(
        at=datetime.fromisoformat(data["at"]),
        ok=bool(data["ok"]),
        error=data.get("error"),
        id=data.get("id"),
        verified=data.get("verified"),
    )


def _record_json(record: RunRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "at": record.at.isoformat(),
        "ok": record.ok,
        "error": record.error,
        "id": record.id,
        "verified": record.verified,
    }


def read_schedule(app_root: Path) -> Schedule | None:
    """The app's schedule, None when it has none.

    Raises:
        SettingsError: the file is not a schedule (hand-edited): fix or delete it.
    """
    path = app_root / SCHEDULE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        keep = data.get("keep")
        schedule = Schedule(
            cron=check_cron(data["cron"]),
            since=datetime.fromisoformat(data["since"]),
            keep=None if keep is None else int(keep),
            verify_every=int(data.get("verify_every", 1)),
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError, InvalidName) as exc:
        raise SettingsError(f"{path}: not a backup schedule ({exc}); fix or delete it") from None
    if schedule.since.tzinfo is None:
        raise SettingsError(f"{path}: 'since' has no time zone; fix or delete it")
    return schedule


def write_schedule(app_root: Path, schedule: Schedule | None) -> None:
    """Keep ``schedule`` as the app's, or remove the app's schedule (None)."""
    path = app_root / SCHEDULE_FILE
    if schedule is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, _schedule_json(schedule))


def read_status(app_root: Path) -> BackupStatus:
    """The app's backup status; a missing or unreadable file is a fresh start."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads((app_root / STATUS_FILE).read_text(encoding="utf-8"))
        return BackupStatus(
            runs=int(data.get("runs", 0)),
            scheduled=_record(data.get("scheduled")),
            bundle=_record(data.get("bundle")),
        )
    return BackupStatus()


def write_status(app_root: Path, status: BackupStatus) -> None:
    data = {
        "runs": status.runs,
        "scheduled": _record_json(status.scheduled),
        "bundle": _record_json(status.bundle),
    }
    write_atomic(app_root / STATUS_FILE, json.dumps(data, indent=2) + "\n")


def after_run(status: BackupStatus, record: RunRecord) -> BackupStatus:
    return replace(status, runs=status.runs + 1, scheduled=record)


# -- the time zone cron expressions are read in ----------------------------------------------


def local_zone(environ: dict[str, str] | None = None) -> tzinfo:
    """The machine's time zone, as cron uses it: ``TZ`` when it names a zone, else
    /etc/localtime (Linux and macOS), else UTC. A ZoneInfo, so daylight saving time moves
    the schedule with the wall clock."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415 (not at start)

    name = (os.environ if environ is None else environ).get("TZ", "").removeprefix(":")
    if name:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(name)
    with contextlib.suppress(OSError, ZoneInfoNotFoundError, ValueError):
        # /etc/localtime links to .../zoneinfo/Europe/Berlin on Debian and macOS alike.
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
    with contextlib.suppress(OSError, ValueError), open("/etc/localtime", "rb") as handle:
        return ZoneInfo.from_file(handle)  # a copy, not a link: nameless, but right
    return UTC


def zone_name(zone: tzinfo) -> str:
    return str(getattr(zone, "key", None) or zone.tzname(datetime.now(zone)) or "UTC")
