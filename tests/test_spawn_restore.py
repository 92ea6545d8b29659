"""Spawns in worker threads (a restore, ``OsSpawner.overlapping``) against everything in
dokuend that reaps: while a child is spawned in a thread it is not yet in ``live``, and no
``waitpid`` of dokuend's may take it then, or its exit status is lost and its slot stuck.
Here many children exit at once as they are spawned while another process is being
stopped (its ``group_alive`` is polled, as an ending does)."""

import signal
from pathlib import Path

import anyio
import pytest

from dokuen.supervise.spawn import HAVE_PIDFD, OsSpawner

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not HAVE_PIDFD, reason="threaded spawns are the pidfd way's"),
]
ENV = {"PATH": "/usr/bin:/bin"}


async def test_children_that_exit_at_once_keep_their_status_while_another_ends(
    tmp_path: Path,
) -> None:
    spawner = OsSpawner()
    ending = await spawner("exec sleep 1000", ENV, tmp_path)
    ending.signal_group(signal.SIGKILL)  # dead, unreaped: its ending polls group_alive
    statuses: dict[int, int] = {}
    done = anyio.Event()

    async def poll_the_ending() -> None:  # what Ending.terminate does, without its pause
        while not done.is_set():
            ending.group_alive()
            await anyio.sleep(0)

    async def one(code: int) -> None:
        child = await spawner(f"exit {code}", ENV, tmp_path)
        statuses[code] = await child.wait()
        await child.aclose()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as outer:
            outer.start_soon(poll_the_ending)
            with spawner.overlapping():
                async with anyio.create_task_group() as group:
                    for code in range(40):
                        group.start_soon(one, code % 100)
            done.set()
        assert await ending.wait() == -signal.SIGKILL
    await ending.aclose()
    assert statuses == {code: code for code in range(40)}
    assert spawner.live == set()
