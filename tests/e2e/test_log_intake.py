"""The intake under the installed dokuend: the last lines of a process that exits come
before its exit line, and pipes that come and go leave no descriptor behind."""

import os
from pathlib import Path

from tests.e2e.conftest import Dokuen, wait_for, write_app

BURST = 30000


def test_a_burst_then_an_exit_logs_every_line_then_the_exit(dokuen: Dokuen, apps_dir: Path) -> None:
    # seq writes in 4 KiB blocks: bursts, read on the intake's turns, not one line a read.
    # `exec` so the exit comes the moment the last block is written.
    dokuen.deploy("burst", write_app(apps_dir / "burst", f"once: exec seq 1 {BURST}\n"))
    wait_for(lambda: "burst[dokuen]: once.1 exited with code 0" in dokuen.log(), "the exit")
    lines = [line for line in dokuen.log().splitlines() if " burst[" in line]
    exit_at = next(i for i, line in enumerate(lines) if "once.1 exited with code 0" in line)
    first_life = lines[:exit_at]
    numbers = [
        int(line.split(" burst[once.1]: ", 1)[1]) for line in first_life if "[once.1]:" in line
    ]
    assert numbers == list(range(1, BURST + 1))  # every line, whole, in order, before the exit
    stamps = [line.split(" ", 1)[0] for line in lines]
    assert stamps == sorted(stamps)  # and the stream stamped in order


def _descriptors(pid: int) -> list[str]:
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue  # closed meanwhile
    return sorted(found)


def test_starting_and_stopping_many_processes_leaves_no_descriptor(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    procfile = (
        "quiet: echo up; exec sleep 1000\n"
        "loud: seq 1 20000; echo done; exec sleep 1000\n"  # a burst, then quiet
    )
    dokuen.deploy("many", write_app(apps_dir / "many", procfile))
    assert dokuen.process is not None
    pid = dokuen.process.pid
    rounds: list[list[str]] = []
    for _ in range(3):
        dokuen.ctl("ps:scale", "many", "quiet=12", "loud=4")
        wait_for(lambda: dokuen.running("many", 16), "16 processes")
        wait_for(
            lambda: dokuen.log().count("]: done\n") >= 4 * (len(rounds) + 1), "every loud burst"
        )
        held = _descriptors(pid)
        assert sum("/run/fifo/" in target for target in held) == 16  # one FIFO each
        dokuen.ctl("ps:scale", "many", "quiet=0", "loud=0")
        wait_for(lambda: dokuen.ps("many") == [], "every process gone")
        rounds.append(_descriptors(pid))
    # The first round may open what the daemon keeps (its worker threads, say); after it,
    # sixteen more processes started and stopped leave exactly the same descriptors.
    assert rounds[1] == rounds[2]
    assert rounds[0] == rounds[2]
    assert not any("/run/fifo/" in target for target in rounds[2])
