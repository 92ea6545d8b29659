"""The on-disk record of running processes: start times from /proc, whole-file writes,
unreadable records dropped, and the choice of what a new dokuend adopts."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from dokuen.apps.adoption import choose
from dokuen.supervise.record import ProcessRecord, Records, is_zombie, start_time


def record(name: str, pid: int, start: int, release: str = "v2") -> ProcessRecord:
    return ProcessRecord(pid, start, "blog", name, release, 5000 + pid % 100, None, f"/f/{pid}")


def test_a_start_time_tells_a_process_from_a_reused_pid() -> None:
    mine = start_time(os.getpid())
    assert isinstance(mine, int)
    assert mine > 0
    assert start_time(os.getpid()) == mine  # stable
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert start_time(child.pid) is not None
        assert start_time(child.pid) >= mine  # type: ignore[operator]
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert is_zombie(child.pid)  # a zombie keeps its start time until it is reaped
        assert start_time(child.pid) is not None
    finally:
        child.kill()
        child.wait()
    assert start_time(child.pid) is None
    assert not is_zombie(child.pid)


def test_a_command_with_spaces_and_parentheses_does_not_shift_the_fields(tmp_path: Path) -> None:
    program = tmp_path / "a) b (c"
    program.symlink_to("/bin/sleep")
    child = subprocess.Popen([str(program), "30"])
    try:
        with open(f"/proc/{child.pid}/stat", "rb") as stat:
            assert b"(a) b (c)" in stat.read()
        assert start_time(child.pid) == start_time(child.pid)
        assert record("web.1", child.pid, start_time(child.pid) or -1).alive()
        assert not record("web.1", child.pid, (start_time(child.pid) or 0) + 1).alive()
    finally:
        child.kill()
        child.wait()


def test_records_are_written_whole_and_bad_ones_are_dropped(tmp_path: Path) -> None:
    records = Records(tmp_path / "processes")
    one, two = record("web.1", 11, 100), record("clock.1", 12, 101)
    records.write(one)
    records.write(two)
    assert sorted(records.load(), key=lambda r: r.pid) == [one, two]
    assert oct((tmp_path / "processes").stat().st_mode & 0o777) == "0o700"
    (tmp_path / "processes" / "bad.json").write_text("{not json")
    (tmp_path / "processes" / "odd.json").write_text(json.dumps({"pid": 1}))
    (tmp_path / "processes" / "half.tmp").write_text("{")  # a write cut short
    assert sorted(records.load(), key=lambda r: r.pid) == [one, two]
    assert sorted(p.name for p in (tmp_path / "processes").iterdir()) == [
        "blog.clock.1.12.json",
        "blog.web.1.11.json",
    ]
    records.remove(one)
    records.remove(one)  # twice is fine
    assert records.load() == [two]


def test_a_full_disk_leaves_the_process_running_unrecorded(tmp_path: Path) -> None:
    (tmp_path / "processes").write_text("a file where the directory should be")
    Records(tmp_path / "processes").write(record("web.1", 11, 100))  # logged, not raised
    assert Records(tmp_path / "processes").load() == []


@pytest.mark.parametrize(
    ("records", "release", "wanted", "adopted", "stopped"),
    [
        # The formation's processes of the current release: all adopted.
        (
            [("web.1", 1, 10, "v2"), ("clock.1", 2, 11, "v2")],
            "v2",
            ["web.1", "clock.1"],
            {"web.1": 1, "clock.1": 2},
            [],
        ),
        # Another release (a deploy that was switching), an instance past the formation.
        ([("web.1", 1, 10, "v1"), ("web.2", 2, 11, "v2")], "v2", ["web.1"], {}, [1, 2]),
        # Two copies of web.1 (old and new of a swap): the older, proven one is kept.
        ([("web.1", 3, 12, "v2"), ("web.1", 1, 10, "v2")], "v2", ["web.1"], {"web.1": 1}, [3]),
        # No release (a stopped or broken app): nothing is adopted.
        ([("web.1", 1, 10, "v2")], None, ["web.1"], {}, [1]),
    ],
)
def test_what_is_adopted_and_what_is_stopped(
    records: list[tuple[str, int, int, str]],
    release: str | None,
    wanted: list[str],
    adopted: dict[str, int],
    stopped: list[int],
) -> None:
    found = [record(name, pid, start, rel) for name, pid, start, rel in records]
    adopt, rest = choose(found, release, wanted)
    assert {name: r.pid for name, r in adopt.items()} == adopted
    assert sorted(r.pid for r in rest) == stopped
