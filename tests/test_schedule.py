"""Table tests for backup schedules: due times, missed runs, retention, verification, files."""

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dokuen.backup.schedule import (
    BackupStatus,
    RunRecord,
    Schedule,
    check_cron,
    expired_keys,
    ids_of,
    latest_due,
    local_zone,
    make_schedule,
    next_run,
    read_schedule,
    read_status,
    should_verify,
    split_key,
    unique_id,
    warnings,
    write_schedule,
    write_status,
)
from dokuen.errors import InvalidName, SettingsError


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


NIGHTLY = Schedule("0 3 * * *", since=at("2026-11-20 12:00"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0 3 * * *", "0 3 * * *"),
        ("  0  3 * *   1-5 ", "0 3 * * 1-5"),
        ("*/15 * * * *", "*/15 * * * *"),
        ("@daily", "@daily"),
        ("30 2 1 * mon", "30 2 1 * mon"),
    ],
)
def test_cron_expressions(text: str, expected: str) -> None:
    assert check_cron(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0 3 * *",
        "0 3 * * * *",
        "61 3 * * *",
        "0 25 * * *",
        "@reboot",
        "every day",
        "0 3 * * 9",
        "0 0 31 2 *",  # parses, and never comes due
    ],
)
def test_bad_cron_expressions_are_named_with_the_form_to_use(text: str) -> None:
    with pytest.raises(InvalidName, match=r"invalid cron expression .*\(use five fields"):
        check_cron(text)


@pytest.mark.parametrize(
    ("keep", "every", "message"),
    [(0, 1, "keep at least 1"), (3, 0, "use 1 for each one")],
)
def test_bad_counts(keep: int, every: int, message: str) -> None:
    with pytest.raises(InvalidName, match=message):
        make_schedule("@daily", at("2026-11-20 00:00"), keep, every)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2026-11-25 03:00:00", "2026-11-25 03:00"),  # exactly on time: that one
        ("2026-11-25 03:00:30", "2026-11-25 03:00"),
        ("2026-11-25 02:59:59", "2026-11-24 03:00"),
        ("2026-11-25 23:00:00", "2026-11-25 03:00"),
    ],
)
def test_latest_due(now: str, expected: str) -> None:
    assert latest_due("0 3 * * *", at(now)) == at(expected)


@pytest.mark.parametrize(
    ("last_run", "now", "expected", "why"),
    [
        (None, "2026-11-20 13:00", "2026-11-21 03:00", "new schedule: the next due time"),
        (None, "2026-11-21 03:00", "2026-11-21 03:00", "the first one is due now"),
        ("2026-11-24 03:00:05", "2026-11-24 10:00", "2026-11-25 03:00", "ran: the next"),
        ("2026-11-24 03:00:05", "2026-11-25 03:00", "2026-11-25 03:00", "due right now"),
        ("2026-11-22 03:00:01", "2026-11-25 10:00", "2026-11-25 10:00", "down 3 days: once"),
        ("2026-11-25 10:00:00", "2026-11-25 10:00", "2026-11-26 03:00", "made up: not again"),
        ("2026-11-30 00:00:00", "2026-11-25 10:00", "2026-11-26 03:00", "clock went back"),
    ],
)
def test_next_run(last_run: str | None, now: str, expected: str, why: str) -> None:
    last = at(last_run) if last_run else None
    assert next_run(NIGHTLY, last, at(now)) == at(expected), why


def test_next_run_follows_the_wall_clock_across_daylight_saving_time() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    schedule = Schedule("0 3 * * *", since=datetime(2026, 3, 27, 12, tzinfo=berlin))
    last = datetime(2026, 3, 28, 3, 0, 1, tzinfo=berlin)  # CET, +01:00
    following = next_run(schedule, last, datetime(2026, 3, 28, 12, tzinfo=berlin))
    assert following == datetime(2026, 3, 29, 3, tzinfo=berlin)
    assert following == datetime(2026, 3, 29, 1, tzinfo=UTC)  # CEST by then: +02:00


def test_the_night_the_clock_goes_back_runs_no_backup_over_and_over() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    schedule = Schedule("30 2 * * *", since=datetime(2026, 10, 20, 12, tzinfo=berlin))
    ran = datetime(2026, 10, 25, 0, 30, 1, tzinfo=UTC).astimezone(berlin)  # 02:30 CEST
    after = datetime(2026, 10, 25, 0, 30, 6, tzinfo=UTC).astimezone(berlin)  # 02:30:06 CEST
    following = next_run(schedule, ran, after)
    assert following > after  # not due again at once (in one zone, 02:30+01:00 < 02:30:06+02:00)
    assert following >= datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET at the soonest


@pytest.mark.parametrize(
    ("every", "verified_runs"),
    [(1, [0, 1, 2, 3, 4, 5, 6]), (3, [0, 3, 6]), (7, [0])],
)
def test_should_verify_the_first_and_then_every_nth(every: int, verified_runs: list[int]) -> None:
    assert [run for run in range(7) if should_verify(run, every)] == verified_runs


def test_unique_ids_are_utc_seconds_moved_on_when_taken() -> None:
    moment = datetime(2026, 11, 25, 4, 0, 0, 500, tzinfo=ZoneInfo("Europe/Berlin"))
    assert unique_id(moment, []) == "20261125T030000Z"
    assert unique_id(moment, ["20261125T030000Z", "20261125T030001Z"]) == "20261125T030002Z"


KEYS = [
    "blog/db/20261121T030000Z.dump",
    "blog/db/20261121T030000Z.json",
    "blog/db/20261122T030000Z.dump",
    "blog/db/20261122T030000Z.json",
    "blog/db/20261123T030000Z.dump",
    "blog/db/20261123T030000Z.json",
    "blog/repo/20261120T100000Z.bundle",
    "blog/repo/20261120T100000Z.json",
    "blog/repo/20261124T100000Z.bundle",
    "blog/repo/20261124T100000Z.json",
    "blog/notes.txt",
    "blog/db/latest.dump",
    "shop/db/20261101T030000Z.dump",
]


def test_split_key_and_ids() -> None:
    assert split_key("blog/db/20261121T030000Z.dump") == ("blog", "db", "20261121T030000Z")
    assert split_key("blog/db/latest.dump") is None
    assert split_key("blog/notes.txt") is None
    assert ids_of(KEYS, "blog", "db") == [
        "20261121T030000Z",
        "20261122T030000Z",
        "20261123T030000Z",
    ]


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        (5, []),
        (
            2,
            [
                "blog/db/20261121T030000Z.json",  # the manifest first: unlisted at once
                "blog/db/20261121T030000Z.dump",
            ],
        ),
        (
            1,
            [
                "blog/db/20261121T030000Z.json",
                "blog/db/20261121T030000Z.dump",
                "blog/db/20261122T030000Z.json",
                "blog/db/20261122T030000Z.dump",
                "blog/repo/20261120T100000Z.json",
                "blog/repo/20261120T100000Z.bundle",
            ],
        ),
    ],
)
def test_retention_keeps_the_newest_of_each_kind_and_nothing_else_is_touched(
    keep: int, expected: list[str]
) -> None:
    assert expired_keys(KEYS, "blog", keep) == expected


def test_retention_counts_only_complete_backups_and_leaves_uploads_alone() -> None:
    keys = [
        "blog/db/20261121T030000Z.dump",
        "blog/db/20261121T030000Z.json",
        "blog/db/20261122T030000Z.dump",  # no manifest: under way, or left by a crash
        "blog/db/20261123T030000Z.dump",
        "blog/db/20261123T030000Z.json",
    ]
    assert expired_keys(keys, "blog", 2) == []
    assert expired_keys(keys, "blog", 1) == [
        "blog/db/20261121T030000Z.json",
        "blog/db/20261121T030000Z.dump",
    ]


def test_warnings_while_the_last_attempt_failed() -> None:
    failed = RunRecord(at("2026-11-25 03:00"), ok=False, error="no such bucket 'b'")
    assert warnings("blog", BackupStatus()) == []
    assert warnings("blog", BackupStatus(1, scheduled=failed, bundle=failed)) == [
        "the scheduled backup of blog failed at 2026-11-25 03:00:00+00:00: no such bucket 'b'",
        "the repository backup of blog failed at 2026-11-25 03:00:00+00:00: no such bucket 'b'",
    ]
    fine = RunRecord(at("2026-11-26 03:00"), ok=True, id="20261126T030000Z", verified=True)
    assert warnings("blog", BackupStatus(2, scheduled=fine)) == []


def test_schedule_and_status_files_round_trip(tmp_path: Path) -> None:
    assert read_schedule(tmp_path) is None
    schedule = make_schedule("0 3 * * *", at("2026-11-20 12:00"), keep=7, verify_every=3)
    write_schedule(tmp_path, schedule)
    assert read_schedule(tmp_path) == schedule
    write_schedule(tmp_path, None)
    assert read_schedule(tmp_path) is None
    assert read_status(tmp_path) == BackupStatus()
    status = BackupStatus(3, RunRecord(at("2026-11-25 03:00"), ok=False, error="x"), None)
    write_status(tmp_path, status)
    assert read_status(tmp_path) == status


def test_a_hand_broken_schedule_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "backup-schedule.json").write_text('{"cron": "0 3 * *", "since": "x"}')
    with pytest.raises(SettingsError, match=r"backup-schedule\.json: not a backup schedule"):
        read_schedule(tmp_path)


def test_local_zone_from_tz() -> None:
    assert local_zone({"TZ": "Europe/Berlin"}) == ZoneInfo("Europe/Berlin")
    assert local_zone({"TZ": ":America/New_York"}) == ZoneInfo("America/New_York")
    assert local_zone({"TZ": "Not/AZone"}) is not None


def test_times_in_a_zone_read_from_a_file_are_written(tmp_path: Path) -> None:
    """/etc/localtime may be a copy, not a link: its zone has no name and cannot be
    deep-copied, and must still be written."""
    berlin = Path("/usr/share/zoneinfo/Europe/Berlin")
    if not berlin.exists():
        pytest.skip("no system time zone files")
    with berlin.open("rb") as handle:
        zone = ZoneInfo.from_file(handle)
    moment = datetime(2026, 11, 25, 3, 0, tzinfo=zone)
    write_schedule(tmp_path, make_schedule("@daily", moment))
    write_status(tmp_path, BackupStatus(1, RunRecord(moment, ok=True, id="x"), None))
    assert read_status(tmp_path).scheduled == RunRecord(moment, ok=True, id="x")
