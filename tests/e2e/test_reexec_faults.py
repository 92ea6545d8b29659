"""A re-exec that fails after its check (``execve`` itself fails), then one that works: the
line held back at the first is written once, by the image that went on, and never again;
a carry file no image of this attempt wrote is never put in front of a line. Real dokuend,
real processes, a real failed ``execve``."""

import contextlib
import json
import re
import subprocess
import sys
import sysconfig
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import BIN, Dokuen, free_port_block, wait_for, write_app

# Numbered pieces, forty to a line, 10 ms apart: at any moment a line is held back.
DRIP = """\
import sys, time
n = 0
while True:
    for _ in range(40):
        n += 1
        sys.stdout.write(f"[{n}]")
        sys.stdout.flush()
        time.sleep(0.01)
    sys.stdout.write("\\n")
    sys.stdout.flush()
"""
COUNTER = """\
import time
n = 0
while True:
    n += 1
    print(f"tick {n}", flush=True)
    time.sleep(0.01)
"""
PROCFILE = "clock: python3 -u counter.py\ndrip: python3 -u drip.py\n"
STALE = b"0123456789abcdef\nSTALE-CARRY "  # what a dokuend killed during a re-exec left


def entry_script(interpreter: Path, breaker: Path) -> str:
    """dokuend's entry point on an interpreter path of the test's own: its ``--version``
    check passes and, once ``breaker`` exists, removes that interpreter behind itself (an
    upgrade that goes wrong between the check and the ``execve``)."""
    return (
        "import os, sys\n"
        f"if sys.argv[-1] == '--version' and os.path.exists({str(breaker)!r}):\n"
        f"    os.unlink({str(breaker)!r})\n"
        f"    os.unlink({str(interpreter)!r})\n"
        "from dokuen.cli.dokuend import main\n"
        "if sys.argv[1:2] and sys.argv[1].endswith('/dokuend'):\n"
        "    del sys.argv[1]\n"
        "main()\n"
    )


@pytest.fixture
def breakable(tmp_path: Path) -> Iterator[tuple[Dokuen, Path, Path]]:
    """A dokuend run by ``tmp_path/venv/bin/python3`` (a link to this interpreter), ``blog``
    deployed with its ``clock`` and ``drip``; the interpreter link and the breaker file."""
    venv = tmp_path / "venv"  # this test's virtualenv's packages, its own interpreter path
    bindir = venv / "bin"
    bindir.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text((Path(sys.prefix) / "pyvenv.cfg").read_text())
    packages = Path(sysconfig.get_paths()["purelib"])
    (venv / packages.relative_to(sys.prefix)).parent.mkdir(parents=True)
    (venv / packages.relative_to(sys.prefix)).symlink_to(packages)
    interpreter = bindir / "python3"
    interpreter.symlink_to(Path(sys.executable).resolve())
    (bindir / "dokuenctl").symlink_to(BIN / "dokuenctl")  # what git hooks run, beside it
    breaker = tmp_path / "break-the-next-exec"
    entry = tmp_path / "dokuend-entry.py"
    entry.write_text(entry_script(interpreter, breaker))
    daemon = Dokuen(
        home=tmp_path / "home",
        ports=free_port_block(),
        launcher=(str(interpreter), str(entry)),
    )
    daemon.start()
    try:
        src = write_app(tmp_path / "src", PROCFILE, {"counter.py": COUNTER, "drip.py": DRIP})
        daemon.deploy("blog", src)
        wait_for(lambda: daemon.running("blog", 2), "blog's clock and drip")
        yield daemon, interpreter, breaker
    finally:
        if daemon.process is not None:
            try:
                daemon.terminate(timeout=30)  # stops blog's processes too
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait(30)
        # Apps outlive a dokuend that died (by design): end what this test started.
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if process.cwd().startswith(f"{tmp_path}/"):
                    process.kill()


def started(daemon: Dokuen) -> float:
    return float(json.loads(daemon.ctl("status", "--json").stdout)["started"])


def pieces(log: str) -> list[int]:
    """Every numbered piece of drip's lines, in the order the log has them."""
    found: list[int] = []
    for line in re.findall(r"blog\[drip\.1\]: (.*)$", log, re.M):
        found += [int(n) for n in re.findall(r"\[(\d+)\]", line)]
    return found


def assert_each_once_in_order(numbers: list[int], what: str) -> None:
    assert numbers, f"nothing of {what} in the log"
    twice = sorted(n for n, c in Counter(numbers).items() if c > 1)
    assert not twice, f"{what}: written twice: {twice[:10]}"
    assert numbers == list(range(1, len(numbers) + 1)), f"{what}: lost or out of order"


def test_a_failed_execve_leaves_no_carry_file_and_a_stale_one_is_never_used(
    breakable: tuple[Dokuen, Path, Path],
) -> None:
    daemon, interpreter, breaker = breakable
    fifos = daemon.home / "run" / "fifo"
    wait_for(lambda: len(pieces(daemon.log())) > 80, "drip's first lines")
    before = started(daemon)
    processes = {row["name"]: row["pid"] for row in daemon.ps("blog")}

    breaker.touch()
    failed = daemon.ctl("daemon:reload", "--timeout", "20", check=False)
    assert failed.returncode == 1, failed
    assert re.fullmatch(
        r"error: the re-exec failed and dokuend goes on as it was: \S+/venv/bin/python3: No "
        r"such file or directory.*; fix the installation and run dokuenctl daemon:reload "
        r"again\n",
        failed.stderr,
    ), failed.stderr
    assert not interpreter.exists()
    # The image that went on holds its lines itself: no carry file is left for a later one.
    assert sorted(p.name for p in fifos.glob("*.carry")) == []
    assert started(daemon) == before
    assert {row["name"]: row["pid"] for row in daemon.ps("blog")} == processes
    count = len(pieces(daemon.log()))
    wait_for(lambda: len(pieces(daemon.log())) > count + 80, "drip's lines after the failure")

    # A carry file from some other attempt (a dokuend killed during it) beside clock.1's
    # FIFO; then the interpreter is back and a re-exec works.
    clock = next(p for p in fifos.iterdir() if p.name.startswith("blog.clock.1."))
    clock.with_name(clock.name + ".carry").write_bytes(STALE)
    interpreter.symlink_to(Path(sys.executable).resolve())
    daemon.ctl("daemon:reload", "--timeout", "60")
    assert started(daemon) != before
    assert {row["name"]: row["pid"] for row in daemon.ps("blog")} == processes
    count = len(pieces(daemon.log()))
    wait_for(lambda: len(pieces(daemon.log())) > count + 80, "drip's lines after the re-exec")

    log = daemon.log()
    assert "STALE-CARRY" not in log
    assert "0123456789abcdef" not in log
    assert_each_once_in_order(pieces(log), "drip's pieces")
    ticks = [int(n) for n in re.findall(r"blog\[clock\.1\]: tick (\d+)$", log, re.M)]
    assert_each_once_in_order(ticks, "clock's ticks")
    assert list(fifos.glob("*.carry")) == []  # the carried lines were read once, and removed


def test_lines_carried_to_a_new_image_that_dies_at_start_reach_the_next_dokuend(
    breakable: tuple[Dokuen, Path, Path],
) -> None:
    """The new image passes the check but refuses its settings at start and exits (the
    apps run on, as after a kill -9); the dokuend started next (systemd's restart) takes
    the carried lines: every piece of drip's held line is in the log once, in order."""
    daemon, _interpreter, _breaker = breakable
    assert daemon.process is not None
    wait_for(lambda: len(pieces(daemon.log())) > 80, "drip's first lines")
    processes = {row["name"]: row["pid"] for row in daemon.ps("blog")}
    settings = daemon.home / "dokuend.env"
    settings.write_text("DOKUEN_NO_SUCH_SETTING=1\n")  # read at start, not by --version
    daemon.ctl("daemon:reload", "--timeout", "0.5", check=False)  # no new image answers
    assert daemon.process.wait(30) != 0
    fifos = daemon.home / "run" / "fifo"
    assert list(fifos.glob("blog.drip.1.*.carry"))  # the held line, waiting
    assert (daemon.home / "run" / "carry.generation").exists()
    settings.unlink()
    daemon.start()
    assert {row["name"]: row["pid"] for row in daemon.ps("blog")} == processes  # adopted
    count = len(pieces(daemon.log()))
    wait_for(lambda: len(pieces(daemon.log())) > count + 80, "drip's lines after the restart")
    assert_each_once_in_order(pieces(daemon.log()), "drip's pieces")
    assert list(fifos.glob("*.carry")) == []
    assert not (daemon.home / "run" / "carry.generation").exists()
