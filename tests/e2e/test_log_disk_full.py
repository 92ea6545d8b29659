"""The unified log's file system full (a small tmpfs on ``HOME/logs`` alone): the apps keep
running, writing and serving, dokuend neither dies nor floods its own output, the lines it
cannot write are counted and said once, the file holds only whole lines, and writing goes
on once there is room again."""

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Dokuen, free_port_block, get_json, wait_for, write_app
from tests.e2e.test_faults import fill

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")

# Numbered lines of about 200 bytes: 20 a second while the file ``slow`` exists (so the
# log stays far from filling its disk by itself), else some 2,500 a second (its 1 MiB FIFO,
# about 5,000 lines, would fill in two seconds unread); how far it got goes to ``progress``.
TALKER = """\
import os, sys, time
n = 0
pad = "x" * 190
while True:
    n += 1
    sys.stdout.write(f"n {{n}} {{pad}}\\n")
    if os.path.exists({slow!r}):
        sys.stdout.flush()
        time.sleep(0.05)
    if n % 50 == 0:
        sys.stdout.flush()
        with open({progress!r}, "w") as out:
            out.write(str(n))
        time.sleep(0.02)
"""
LINE = re.compile(
    rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00 [a-z0-9-]+\[[A-Za-z0-9_.-]+\]: .*"
)


@pytest.fixture
def log_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs where the home's logs go, unmounted at the end."""
    logs = tmp_path / "home" / "logs"
    logs.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(logs)], check=True)
    try:
        yield logs
    finally:
        subprocess.run(["umount", "-l", str(logs)], check=False)


def progress(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


def numbers(log: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"^\S+ blog\[talker\.1\]: n (\d+) x{190}$", log, re.M)]


def test_a_full_log_disk_drops_counted_lines_and_everything_goes_on(
    log_disk: Path, tmp_path: Path
) -> None:
    counter, slow = tmp_path / "progress", tmp_path / "slow"
    slow.touch()
    daemon = Dokuen(home=tmp_path / "home", ports=free_port_block())
    daemon.start()
    try:
        app = write_app(
            tmp_path / "src",
            "web: python3 envserver.py\ntalker: python3 talker.py\n",
            {"talker.py": TALKER.format(progress=str(counter), slow=str(slow))},
        )
        daemon.deploy("blog", app)
        rows = wait_for(lambda: daemon.running("blog", 2), "blog's web and talker")
        web = next(row for row in rows if row["type"] == "web")
        wait_for(lambda: numbers(daemon.log_file.read_bytes()), "the talker's lines")

        filler = fill(log_disk)
        wait_for(lambda: "log.write_failed" in daemon.daemon_stderr(), "a failed log write")
        # The talker is read all along: fast now, it gets past more than a FIFO's worth.
        start = progress(counter)
        slow.unlink()
        wait_for(lambda: progress(counter) > start + 8_000, "the talker going on", 30)
        slow.touch()
        assert get_json(web["port"])["PORT"] == str(web["port"])  # still serving
        assert daemon.ctl("status").returncode == 0
        assert [(r["name"], r["pid"]) for r in daemon.ps("blog")] == [
            (r["name"], r["pid"]) for r in rows
        ]
        assert daemon.process is not None
        assert daemon.process.poll() is None
        # Said once, not once a batch.
        said = daemon.daemon_stderr()
        assert said.count("log.write_failed") == 1, said[-2000:]

        filler.unlink()
        after = progress(counter)
        wait_for(
            lambda: max(numbers(daemon.log_file.read_bytes()), default=0) > after,
            "the talker's lines in the log again",
        )
        log = daemon.log_file.read_bytes()
        dropped = re.findall(
            rb"^\S+ dokuen\[dokuen\]: (\d+) lines \(([\d.]+ [KMG]?i?B)\) could not be written "
            rb"to this log from \S+ to \S+: No space left on device$",
            log,
            re.M,
        )
        assert len(dropped) == 1, log[-3000:]
        # Only whole lines in the file: none cut by the full disk, none run into the next.
        for line in log.splitlines():
            assert LINE.fullmatch(line), line[:300]
        seen = numbers(log)
        assert seen == sorted(seen)
        assert len(seen) == len(set(seen))
        missing = max(seen) - len(seen)
        assert missing > 0
        assert int(dropped[0][0]) >= missing  # the talker's, and any other lines lost
        said = daemon.daemon_stderr()
        assert said.count("log.write_failed") == 1
        assert said.count("log.write_resumed") == 1
        status = json.loads(daemon.ctl("status", "--json").stdout)
        assert status["running"] == 2
    finally:
        if daemon.process is not None:
            daemon.terminate()
