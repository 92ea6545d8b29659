"""The reaper at SIGCHLD (reaper.reap_orphans) against the other children a daemon has: a
helper a worker thread runs with ``subprocess.run`` (git, ssh-keygen, the ``--version`` a
re-exec checks) keeps its own exit status, and an orphan adopted from a process's session
is still reaped. Real processes, in a Python of their own (a subreaper with a SIGCHLD
handler, not the test runner)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, subprocess, sys, anyio, psutil
from pathlib import Path
from dokuen.supervise import reaper
from dokuen.supervise.spawn import OsSpawner

async def main():
    spawner = OsSpawner(subreaper=reaper.become_subreaper())
    assert spawner.subreaper
    env = {"PATH": os.defpath}
    async with anyio.create_task_group() as tg:
        tg.start_soon(spawner.reap_orphans)
        await anyio.sleep(0.1)
        # A process of ours leaves a child behind, which exits while the process runs on.
        keeper = await spawner("(exec sleep 0.3 &); exec sleep 1000", env, Path("/"))
        codes = []
        for i in range(100):  # each helper's exit is a SIGCHLD the reaper wakes for
            done = await anyio.to_thread.run_sync(
                lambda: subprocess.run(["sh", "-c", "exit 3"], capture_output=True)
            )
            codes.append(done.returncode)
        with anyio.fail_after(10):
            while True:
                left = [c for c in psutil.Process().children() if c.pid != keeper.pid]
                if not left:
                    break
                await anyio.sleep(0.05)
        keeper.signal_group(9)
        assert await keeper.wait() == -9
        await keeper.aclose()
        tg.cancel_scope.cancel()
    print(sorted(set(codes)), len(codes))

anyio.run(main)
"""


def test_a_helper_keeps_its_exit_status_and_an_orphan_is_still_reaped(tmp_path: Path) -> None:
    """100 ``exit 3`` helpers run from a thread while the reaper wakes at every SIGCHLD:
    each reports 3 (a stolen status reads 0: a broken upgrade's ``--version`` taken for a
    working one), and the orphan a process left behind does not stay a zombie."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[3] 100\n"
