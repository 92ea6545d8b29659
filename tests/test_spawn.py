"""Real children through OsSpawner, in both of its ways: Popen and a pidfd (Linux), and the
event loop's own subprocess support (elsewhere)."""

import os
import signal
from pathlib import Path

import anyio
import psutil
import pytest

from dokuen.supervise.spawn import HAVE_PIDFD, OsSpawner, exec_form, with_profile

pytestmark = pytest.mark.anyio

WAYS = [
    pytest.param(True, id="pidfd", marks=pytest.mark.skipif(not HAVE_PIDFD, reason="no pidfd")),
    pytest.param(False, id="event-loop"),
]
ENV = {"PATH": "/usr/bin:/bin", "ONLY_THIS": "yes"}


async def read_all(child: object) -> bytes:
    chunks = []
    while chunk := await child.read(65536):  # type: ignore[attr-defined]
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("use_pidfd", WAYS)
async def test_output_exit_code_and_exactly_the_environment(
    use_pidfd: bool, tmp_path: Path
) -> None:
    spawner = OsSpawner(use_pidfd=use_pidfd)
    child = await spawner(
        "echo out; echo err >&2; env | grep -v '^PWD=' | sort; exit 3", ENV, tmp_path
    )
    assert child.pid in spawner.live
    with anyio.fail_after(10):
        output = await read_all(child)
        assert await child.wait() == 3
    await child.aclose()
    lines = output.decode().splitlines()
    assert lines[:2] == ["out", "err"]
    assert [line for line in lines[2:] if not line.startswith(("SHLVL=", "_="))] == [
        "ONLY_THIS=yes",
        "PATH=/usr/bin:/bin",
    ]
    assert child.pid not in spawner.live


@pytest.mark.parametrize("use_pidfd", WAYS)
async def test_a_signal_reaches_the_whole_group(use_pidfd: bool, tmp_path: Path) -> None:
    spawner = OsSpawner(use_pidfd=use_pidfd)
    child = await spawner("sleep 1000 & exec sleep 1001", ENV, tmp_path)
    with anyio.fail_after(10):
        while not psutil.Process(child.pid).children():  # the background sleep is forked
            await anyio.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)  # only the main process
        assert await child.wait() == -signal.SIGKILL
        assert child.group_alive()  # its background sleep is still in the group
        child.signal_group(signal.SIGTERM)
        while child.group_alive():
            await anyio.sleep(0.01)
    await child.aclose()


@pytest.mark.parametrize("use_pidfd", WAYS)
async def test_a_bad_working_directory_fails_the_spawn(use_pidfd: bool, tmp_path: Path) -> None:
    spawner = OsSpawner(use_pidfd=use_pidfd)
    with pytest.raises(FileNotFoundError):
        await spawner("true", ENV, tmp_path / "nowhere")
    assert spawner.live == set()


@pytest.mark.parametrize("use_pidfd", WAYS)
async def test_leftovers_finds_what_left_the_group(use_pidfd: bool, tmp_path: Path) -> None:
    marker = str(4000 + os.getpid() % 1000)
    spawner = OsSpawner(use_pidfd=use_pidfd)
    child = await spawner(f"setsid sleep 1{marker} & exec sleep 2{marker}", ENV, tmp_path)
    try:
        with anyio.fail_after(10):
            while not (below := psutil.Process(child.pid).children()):
                await anyio.sleep(0.01)
            while os.getpgid(below[0].pid) == child.pid:  # until setsid has run
                await anyio.sleep(0.01)
            child.signal_group(signal.SIGTERM)
            assert await child.wait() == -signal.SIGTERM
        left = child.leftovers("app", "web.1")
        assert [p.pid for p in left] == [below[0].pid]  # setsid, then exec sleep 1MARKER
    finally:
        for process in child.leftovers("app", "web.1"):
            process.kill()
        await child.aclose()


@pytest.mark.parametrize(
    ("command", "run_as"),
    [
        ("python3 web.py", "exec python3 web.py"),
        ("gunicorn app:app --bind 127.0.0.1:$PORT", "exec gunicorn app:app --bind 127.0.0.1:$PORT"),
        ("./bin/server 'a b'", "exec ./bin/server 'a b'"),
        ("exec sleep 1", "exec sleep 1"),
        ("echo boom; exit 3", "echo boom; exit 3"),
        ("cd web && npm start", "cd web && npm start"),
        ("server > out.log", "server > out.log"),
        ("a | b", "a | b"),
        ("FOO=bar server", "FOO=bar server"),
        ("while true; do x; done", "while true; do x; done"),
        ("export X=1", "export X=1"),
        (". ./env.sh", ". ./env.sh"),
        ("(cd x)", "(cd x)"),
        ("server\nother", "server\nother"),
    ],
)
def test_exec_form(command: str, run_as: str) -> None:
    assert exec_form(command) == run_as


async def test_a_plain_command_is_the_process_itself(tmp_path: Path) -> None:
    spawner = OsSpawner()
    child = await spawner("sleep 1000", ENV, tmp_path)
    try:
        with anyio.fail_after(10):  # the shell execs it: same pid, no child
            while psutil.Process(child.pid).name() != "sleep":
                await anyio.sleep(0.01)
        assert psutil.Process(child.pid).children() == []
    finally:
        child.signal_group(signal.SIGKILL)
        with anyio.fail_after(10):
            assert await child.wait() == -signal.SIGKILL
        await child.aclose()


@pytest.mark.skipif(not HAVE_PIDFD, reason="no pidfd")
async def test_spawns_under_way_together_each_get_their_own_child(tmp_path: Path) -> None:
    """While overlapping (a restore starts hundreds at once), spawns run in worker threads:
    each caller gets its own child and its own exit status, and the reaper waits while any
    is under way. Alone, a spawn runs on the loop."""
    spawner = OsSpawner()
    alone = await spawner("exit 7", ENV, tmp_path)
    assert spawner.spawning == 0  # it never left the loop
    with anyio.fail_after(10):
        assert await alone.wait() == 7
    await alone.aclose()
    statuses: dict[int, int] = {}

    async def one(code: int) -> None:
        child = await spawner(f"exit {code}", ENV, tmp_path)
        assert child.pid in spawner.live
        statuses[code] = await child.wait()
        await child.aclose()

    with anyio.fail_after(20), spawner.overlapping():
        async with anyio.create_task_group() as group:
            for code in range(12):
                group.start_soon(one, code)
            await anyio.sleep(0)  # the first spawns are under way
            assert spawner.spawning > 0
    assert statuses == {code: code for code in range(12)}
    assert spawner.spawning == 0
    assert spawner.live == set()


@pytest.mark.skipif(not HAVE_PIDFD, reason="no pidfd")
async def test_a_spawn_cancelled_on_its_way_still_hands_back_its_child(tmp_path: Path) -> None:
    """Once a spawn starts, its child reaches the caller (and ``live``) even if the caller
    is cancelled meanwhile: a child nobody holds would run on, unsupervised."""
    spawner = OsSpawner()
    with spawner.overlapping(), anyio.CancelScope() as scope:
        scope.cancel()
        child = await spawner("exec sleep 1000", ENV, tmp_path)
    assert child.pid in spawner.live
    child.signal_group(signal.SIGKILL)
    with anyio.fail_after(10):
        assert await child.wait() == -signal.SIGKILL
    await child.aclose()
    assert spawner.live == set()


def test_a_profile_linked_out_of_the_release_is_not_followed_by_dokuend(tmp_path: Path) -> None:
    """Whether the command is wrapped must not tell the app what a root-only path holds:
    dokuend looks at the names only; the shell, as the app's user, does the sourcing."""
    release, hidden = tmp_path / "release", tmp_path / "root-only"
    release.mkdir()
    commands = []
    for exists in (True, False):
        if exists:
            hidden.mkdir(mode=0o700)
            (hidden / "x.sh").write_text("echo secret\n")
            (hidden / "profile").write_text("echo secret\n")
        (release / ".profile.d").symlink_to(hidden)
        commands.append(with_profile("./web", release))
        (release / ".profile.d").unlink()
        (release / ".profile").symlink_to(hidden / "profile")
        commands.append(with_profile("./web", release))
        (release / ".profile").unlink()
        if exists:
            for path in hidden.iterdir():
                path.unlink()
            hidden.rmdir()
    assert len(set(commands)) == 1, commands
    assert commands[0] != with_profile("./web", release) == "exec ./web"
    assert commands[0].endswith("exec ./web")
