"""A process stuck in uninterruptible sleep (state D) does not hang a restart or a stop: a
real one, reading a FUSE file whose server never answers (stuckfs.py), which not even
SIGKILL ends. After the grace period and KILL_WAIT it is reported stuck (in the reply, in
``ps`` and the log) and left to the kernel; once its I/O ends it is reaped and gone."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import Dokuen, wait_for, write_app

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
        reason="a FUSE mount needs root and /dev/fuse",
    ),
]

STUCKFS = Path(__file__).parent / "stuckfs.py"


class StuckFs:
    def __init__(self, mountpoint: Path, server: subprocess.Popen[str], out: Path) -> None:
        self.mountpoint, self.server, self.out = mountpoint, server, out

    def reads(self) -> int:
        return self.out.read_text().count("read pending")

    def stop(self) -> None:
        """End the server (the kernel aborts its requests: the stuck readers end)."""
        if self.server.poll() is None:
            self.server.kill()
            self.server.wait(10)
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False, capture_output=True)


@pytest.fixture
def stuckfs(tmp_path: Path) -> Iterator[StuckFs]:
    mountpoint, out = tmp_path / "mnt", tmp_path / "stuckfs.out"
    mountpoint.mkdir()
    with out.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, str(STUCKFS), str(mountpoint)], stdout=sink, stderr=sink, text=True
        )
    fs = StuckFs(mountpoint, server, out)
    try:
        wait_for(lambda: "mounted" in out.read_text() or server.poll() is not None, "stuckfs")
        if server.poll() is not None:
            pytest.skip(f"no FUSE mount here: {out.read_text().strip()}")
        yield fs
    finally:
        fs.stop()


def stuck_rows(dokuen: Dokuen) -> list[dict[str, object]]:
    return [row for row in dokuen.ps("blog") if row["state"] == "stuck"]


def test_a_process_in_uninterruptible_sleep_is_left_to_the_kernel(
    stuckfs: StuckFs, dokuen: Dokuen, apps_dir: Path
) -> None:
    dokuen.ctl("apps:create", "blog")
    stuck_file = stuckfs.mountpoint / "stuck"
    dokuen.ctl("config:set", "blog", f"STUCK={stuck_file}", "DOKUEN_STOP_TIMEOUT=0.5")
    procfile = 'web: exec python3 envserver.py\nworker: exec cat "$STUCK"\n'
    dokuen.deploy("blog", write_app(apps_dir / "blog", procfile))
    wait_for(lambda: stuckfs.reads() == 1, "the worker's read to reach stuckfs")
    old = next(row["pid"] for row in dokuen.ps("blog") if row["name"] == "worker.1")
    # The restart returns (the call's own timeout is 60 s), says which process is stuck.
    result = dokuen.ctl("restart", "blog", "worker", timeout=60)
    assert result.stdout == "restarted blog: worker.1\n"
    assert f"warning: blog worker.1 (pid {old}) is stuck in uninterruptible sleep (state D)" in (
        result.stderr
    )
    assert psutil.Process(old).status() == psutil.STATUS_DISK_SLEEP  # a real D state
    rows = dokuen.ps("blog")
    assert {(r["name"], r["state"]) for r in rows} == {
        ("web.1", "running"),
        ("worker.1", "running"),
        ("worker.1", "stuck"),
    }
    assert [r["pid"] for r in rows if r["state"] == "stuck"] == [old]
    assert "blog[dokuen]: worker.1 is stuck in uninterruptible sleep" in dokuen.log()
    # The new worker reads too and gets stuck the same way: stop returns as well.
    wait_for(lambda: stuckfs.reads() == 2, "the new worker's read to reach stuckfs")
    stop = dokuen.ctl("stop", "blog", timeout=60)
    assert stop.stdout == "stopped blog\n"
    assert stop.stderr.count("is stuck in uninterruptible sleep") == 2
    assert len(stuck_rows(dokuen)) == 2
    # The file system answers at last (its server is gone): the kernel ends them; reaped.
    stuckfs.stop()
    wait_for(lambda: dokuen.ps("blog") == [], "the stuck processes to be gone")
    assert not psutil.pid_exists(old) or psutil.Process(old).status() != "disk-sleep"
    assert dokuen.log().count("worker.1 (stuck) is gone at last") == 2
    # And the app goes on, its worker now waiting on a FIFO nobody writes (the mount is gone:
    # reading its old path would end at once, and the worker would crash in a loop).
    quiet = apps_dir / "quiet"
    os.mkfifo(quiet)
    dokuen.ctl("config:set", "blog", f"STUCK={quiet}")
    dokuen.ctl("start", "blog")
    wait_for(lambda: dokuen.running("blog", 2), "web and worker again", timeout=60)
