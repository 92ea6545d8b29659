"""A process that exits while dokuend re-executes (``daemon:reload``): what it wrote and
nobody read yet reaches the log all the same, once, in order, then its exit. The app
notices the freeze itself (its pipe stops being read: FIONREAD) and then writes its last
lines and exits, so it ends inside the hand-over, before the new image adopts it. Real
dokuend, real re-execs, real processes."""

import re
import sys
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import Dokuen, free_port_block, wait_for, write_app

# Numbered lines until its output has stayed unread a while (the daemon froze for a
# re-exec), then twenty more and "done", and it exits.
BURST = """\
import fcntl, os, struct, sys, termios, time
pid, n, since = os.getpid(), 0, None
def unread():
    return struct.unpack("i", fcntl.ioctl(1, termios.FIONREAD, b"\\0\\0\\0\\0"))[0]
while True:
    n += 1
    sys.stdout.write(f"burst {pid} {n}\\n")
    sys.stdout.flush()
    time.sleep(0.002)
    if unread() < 200:
        since = None
    elif since is None:
        since = time.monotonic()
    elif time.monotonic() - since > 0.04:
        break
for _ in range(20):
    n += 1
    sys.stdout.write(f"burst {pid} {n}\\n")
sys.stdout.write(f"burst {pid} done\\n")
sys.stdout.flush()
"""
RELOADS = 3


@pytest.fixture
def daemon(tmp_path: Path) -> Dokuen:
    entry = tmp_path / "dokuend-entry.py"
    entry.write_text(
        "import sys\nfrom dokuen.cli.dokuend import main\n\n"
        "if sys.argv[1:2] and sys.argv[1].endswith('/dokuend'):\n"
        "    del sys.argv[1]\nmain()\n"
    )
    return Dokuen(
        home=tmp_path / "home", ports=free_port_block(), launcher=(sys.executable, str(entry))
    )


def runs(log: str) -> dict[int, list[str]]:
    """What each burst process wrote, by pid, in the order the log has it."""
    found: dict[int, list[str]] = {}
    for pid, what in re.findall(r"blog\[burst\.1\]: burst (\d+) (\S+)$", log, re.M):
        found.setdefault(int(pid), []).append(what)
    return found


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def reload_around_an_exit(daemon: Dokuen) -> int:
    """One ``daemon:reload`` that burst's running process ends in; its pid."""
    pid: int = wait_for(lambda: (daemon.running("blog", 1) or [{}])[0].get("pid"), "burst")
    wait_for(lambda: len(runs(daemon.log()).get(pid, [])) > 50, "burst's lines")
    daemon.ctl("daemon:reload", "--timeout", "60")
    wait_for(lambda: gone(pid), f"burst {pid}'s exit")
    wait_for(lambda: "done" in runs(daemon.log()).get(pid, []), f"burst {pid}'s last line")
    return pid


def test_lines_of_a_process_that_exits_during_a_reload_all_reach_the_log(
    daemon: Dokuen, tmp_path: Path
) -> None:
    daemon.start()
    try:
        daemon.deploy(
            "blog", write_app(tmp_path / "src", "burst: python3 -u burst.py\n", {"burst.py": BURST})
        )
        ended = [reload_around_an_exit(daemon) for _ in range(RELOADS)]
        log = daemon.log()
        for pid in ended:
            lines = runs(log)[pid]
            assert lines[-1] == "done", f"burst {pid}: {lines[-5:]}"
            numbers = [int(n) for n in lines[:-1]]
            assert numbers == list(range(1, len(numbers) + 1)), f"burst {pid}: lost or twice"
        exits = re.findall(r"blog\[dokuen\]: burst\.1 exited", log)
        assert len(exits) >= len(ended), log[-3000:]
    finally:
        daemon.terminate()
