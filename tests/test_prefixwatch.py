"""nginx/ made whole again when a part of it goes (proxy/prefixwatch.py): a real directory
and the kernel's inotify, with the settle time cut short. Told by the kernel, the watch
wakes for a loss and for nothing else."""

import subprocess
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


async def test_a_loss_is_healed_and_nothing_else_wakes_the_watch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not the machine's mount table, which another test may change meanwhile: the last
    # test has its own.
    monkeypatch.setattr(prefixwatch, "MOUNTS", str(tmp_path / "no-mount-table"))
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


# Run in a mount namespace of its own (unshare): no mount of another test wakes it, and its
# mounts wake no other test's watch.
MOUNTED = """
import subprocess, sys
from pathlib import Path
import anyio
from dokuen.proxy import prefixwatch

prefixwatch.SETTLE = 0.05
base = Path(sys.argv[1])
prefix, empty = base / "nginx", base / "empty"
looks = []

async def heal():
    looks.append((prefix / "apps").is_dir())
    (prefix / "apps").mkdir(exist_ok=True)
    return True

async def until(n):
    with anyio.fail_after(5):
        while len(looks) < n:
            await anyio.sleep(0.01)

async def main():
    async with anyio.create_task_group() as tg:
        tg.start_soon(prefixwatch.keep_whole, prefix, heal)
        await until(1)
        await anyio.sleep(0.5)  # watched, and nothing wakes it
        print(looks, flush=True)
        subprocess.run(["mount", "--bind", str(empty), str(prefix)], check=True)
        await until(2)
        print(looks, (empty / "apps").is_dir(), flush=True)
        subprocess.run(["umount", str(prefix)], check=True)
        await until(3)
        tg.cancel_scope.cancel()
    print(looks, flush=True)

anyio.run(main)
"""


def test_a_file_system_mounted_over_nginx_is_a_loss(tmp_path: Path) -> None:
    """A bind mount over nginx/ hides it (an empty directory in its place) without a word
    to a watch on the directory underneath: the change of the mount table wakes the watch,
    the look finds nginx/ not whole and it is made again in what is mounted there (on main
    no look ever came). Unmounted, the old nginx/ shows again: another look. Until the
    mount, nothing woke it."""
    (tmp_path / "nginx" / "apps").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    own = ["unshare", "--mount", "--propagation", "private"]
    if subprocess.run([*own, "true"], capture_output=True, check=False).returncode:
        pytest.skip("no mount namespace of its own here (needs root and CAP_SYS_ADMIN)")
    done = subprocess.run(
        [*own, sys.executable, "-c", MOUNTED, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[True]", "[True, False] True", "[True, False, True]"]
