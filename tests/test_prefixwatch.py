"""nginx/ made whole again when a part of it goes (proxy/prefixwatch.py): a real directory
and the kernel's inotify, with the settle time cut short. Told by the kernel, the watch
wakes for a loss and for nothing else."""

import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from dokuen.proxy import prefixwatch
from dokuen.proxy.prefixwatch import keep_whole

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="no inotify"),
]
SETTLE = 0.05
QUIET = 10 * SETTLE  # a look every SETTLE would have come ten times


async def until(check: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not check():
            await anyio.sleep(0.01)


@pytest.fixture(autouse=True)
def short_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefixwatch, "SETTLE", SETTLE)


async def test_a_loss_is_healed_and_nothing_else_wakes_the_watch(tmp_path: Path) -> None:
    prefix = tmp_path / "nginx"
    looks: list[bool] = []

    async def heal() -> bool:
        looks.append((prefix / "apps").is_dir())
        (prefix / "apps").mkdir(parents=True, exist_ok=True)
        return True

    async with anyio.create_task_group() as tg:
        tg.start_soon(keep_whole, prefix, heal)
        await until(lambda: len(looks) == 1)  # at start; the directory was not there
        await until(lambda: len(looks) == 2)  # no watch on a missing directory: a look
        await anyio.sleep(QUIET)
        (prefix / "apps" / "blog.conf").write_text("server {}\n")  # a write is no loss
        await anyio.sleep(QUIET)
        assert looks == [False, True]
        (prefix / "apps" / "blog.conf").unlink()
        (prefix / "apps").rmdir()  # a name in nginx/ gone
        await until(lambda: len(looks) == 3)
        prefix.rename(tmp_path / "moved")  # nginx/ itself gone
        await until(lambda: len(looks) == 5)  # made again, then a look at the new one
        await anyio.sleep(QUIET)  # the new directory is watched: quiet again
        tg.cancel_scope.cancel()
    assert looks == [False, True, False, False, True]
    assert (prefix / "apps").is_dir()


@pytest.mark.parametrize("case", ["not made whole", "behind a link"])
async def test_a_prefix_not_made_whole_or_put_behind_a_link_is_looked_at_again(
    tmp_path: Path, case: str
) -> None:
    """A heal that fails (a full disk) is tried again, and a link at nginx/'s name is not
    watched through: both fall back to a look every SETTLE seconds."""
    prefix = tmp_path / "nginx"
    if case == "behind a link":
        (tmp_path / "elsewhere").mkdir()
        prefix.symlink_to(tmp_path / "elsewhere")
    else:
        prefix.mkdir()
    looks = 0

    async def heal() -> bool:
        nonlocal looks
        looks += 1
        return case == "behind a link"

    async with anyio.create_task_group() as tg:
        tg.start_soon(keep_whole, prefix, heal)
        await until(lambda: looks >= 3)
        tg.cancel_scope.cancel()
