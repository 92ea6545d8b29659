"""The router access log, read by dokuend (proxy/accesslog.py) against real files, inotify
and the log multiplexer: whole lines only, each once across a restart, the space of what
was read given back, nothing an app's uid can read, write or redirect."""

import contextlib
import http.client
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import anyio
import pytest

from dokuen.proxy import accesslog
from dokuen.proxy.accesslog import AccessLog
from dokuen.proxy.router import render_access_log, render_log_format
from dokuen.supervise.logmux import LogMux
from tests.e2e.conftest import free_port_block
from tests.test_router import record

pytestmark = pytest.mark.anyio
APP_UID = 61_917  # no user of this machine's: what an app's own uid is to the file


def request(n: int, **changes: str) -> bytes:
    """nginx's line for request ``n`` (path /r/N), with its newline."""
    return record(path=f"/r/{n}", **changes) + b"\n"


def append(path: Path, data: bytes) -> None:
    """As nginx's workers write: O_APPEND, one write of whole or partial lines."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def shown(log_file: Path) -> list[str]:
    """The request paths of the router lines in the unified log, in order."""
    text = log_file.read_text() if log_file.exists() else ""
    return [line.split('path="', 1)[1].split('"', 1)[0] for line in text.splitlines()]


async def until(check: object, what: str) -> None:
    with anyio.fail_after(10, shield=False):
        while not check():  # type: ignore[operator]
            await anyio.sleep(0.01)


async def reading(prefix: Path, log_file: Path, steps: object) -> AccessLog:
    """Run a reader (and its log) on ``prefix`` while ``steps(reader)`` runs."""
    mux = LogMux(log_file, 1 << 30, 2)
    reader = AccessLog(prefix, mux)
    reader.update([("blog", "web.1", 5001)])
    async with anyio.create_task_group() as tg:
        await tg.start(mux.run)
        async with anyio.create_task_group() as inner:
            await inner.start(reader.run)
            await steps(reader)  # type: ignore[operator]
            inner.cancel_scope.cancel()
        tg.cancel_scope.cancel()
    return reader


async def test_whole_lines_reach_the_log_a_partial_one_waits_and_read_space_is_freed(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "dokuen.log"
    path = tmp_path / "router" / "access.log"

    async def steps(reader: AccessLog) -> None:
        assert reader.problem is None
        assert (tmp_path / "router").stat().st_mode & 0o777 == 0o700
        block = b"".join(request(n) for n in range(2000))  # about 400 KiB
        half = request(2000)
        append(path, block + half[:40])
        await until(lambda: len(shown(log_file)) == 2000, "2000 lines")
        assert reader.turns >= 1
        last = request(2001, status="502", header="-")
        append(path, half[40:] + last)
        await until(lambda: len(shown(log_file)) == 2002, "the partial line, whole")
        # What the log has written is a hole now: the blocks are free, the size is kept.
        await until(lambda: os.stat(path).st_blocks * 512 < 16 << 10, "the hole")
        assert os.stat(path).st_size == len(block) + len(half) + len(last)

    reader = await reading(tmp_path, log_file, steps)
    assert shown(log_file) == [f"/r/{n}" for n in range(2002)]
    assert "code=H13" in log_file.read_text().splitlines()[-1]
    assert reader.counts == {"lines": 2002, "unparsed": 0, "unsent": 0}


async def test_a_new_reader_resumes_after_the_hole_each_line_once(tmp_path: Path) -> None:
    """A restart or a re-exec: lines written while no dokuend read wait in the file, and
    the next reader starts where the last one's hole ends (inside a block: its NULs)."""
    log_file = tmp_path / "dokuen.log"
    path = tmp_path / "router" / "access.log"

    async def first(reader: AccessLog) -> None:
        append(path, b"".join(request(n) for n in range(7)))  # less than a block
        await until(lambda: len(shown(log_file)) == 7, "7 lines")

    async def second(reader: AccessLog) -> None:
        await until(lambda: len(shown(log_file)) == 12, "the lines written meanwhile")

    await reading(tmp_path, log_file, first)
    assert path.read_bytes()[:10] == b"\0" * 10  # punched: the first block zeroed
    append(path, b"".join(request(n) for n in range(7, 12)))  # no dokuend reads now
    await reading(tmp_path, log_file, second)
    assert shown(log_file) == [f"/r/{n}" for n in range(12)]


async def test_odd_lines_keep_their_place_and_a_line_longer_than_a_read_is_cut(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "dokuen.log"
    path = tmp_path / "router" / "access.log"
    huge = request(3).replace(b"/r/3", b"/r/3" + b"x" * (accesslog.CHUNK + 10))

    async def steps(reader: AccessLog) -> None:
        append(path, request(1) + b"not our format\n" + request(2, status="499"))
        append(path, huge + request(4))
        await until(lambda: len(shown(log_file)) == 4, "4 lines")

    reader = await reading(tmp_path, log_file, steps)
    paths = shown(log_file)
    assert paths[:2] == ["/r/1", "/r/2"]
    assert paths[2].startswith("/r/3xxx")
    assert paths[2].endswith("[cut]")
    assert len(paths[2]) < accesslog.MAX_LINE
    assert paths[3] == "/r/4"
    assert reader.counts["unparsed"] == 1
    assert "code=H27" in log_file.read_text().splitlines()[1]


async def test_what_nginx_could_not_write_is_counted_from_its_error_log(tmp_path: Path) -> None:
    errors = tmp_path / "logs" / "error.log"
    errors.parent.mkdir()
    errors.write_bytes(b'old: write() to "/x/router/access.log" failed (28: No space)\n')

    async def steps(reader: AccessLog) -> None:
        assert reader.status()["unsent"] == 0  # before this dokuend: not counted
        with errors.open("ab") as out:
            out.write(b'[alert] 12#12: *5 write() to "/x/router/access.log" failed (28: No sp)\n')
            out.write(b'[alert] 13#13: write() to "/x/router/access.log" was incomplete: 9\n')
            out.write(b"[warn] something else\n")
        assert reader.status()["unsent"] == 2

    await reading(tmp_path, tmp_path / "dokuen.log", steps)


def as_app(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as an app's uid (not root, not nginx's user)."""
    return subprocess.run(
        ["/usr/bin/python3", "-c", script],
        user=APP_UID,
        group=APP_UID,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a script as another uid: needs root")
async def test_an_app_uid_can_neither_read_write_nor_redirect_the_file() -> None:
    # pytest's temporary directories are 0700: a prefix an app's uid can pass through, so
    # that only router/ itself keeps it out.
    top = Path(tempfile.mkdtemp(prefix="dokuen-router-"))
    top.chmod(0o755)
    (top / "logs").mkdir()
    (top / "probe").write_text("readable\n")
    log_file = top / "logs" / "dokuen.log"
    path = top / "router" / "access.log"

    async def steps(reader: AccessLog) -> None:
        append(path, request(1))
        await until(lambda: len(shown(log_file)) == 1, "1 line")
        tries = {
            "read": f"open({str(path)!r}).read()",
            "write": f"open({str(path)!r}, 'a').write('forged')",
            "list": f"import os; os.listdir({str(path.parent)!r})",
            "link": f"import os; os.symlink('/etc/shadow', {str(path.parent / 'x')!r})",
            "swap": f"import os; os.rename({str(path)!r}, '/tmp/x')",
        }
        # The control: the app's uid does reach the prefix (a file readable by all in it).
        assert as_app(f"print(open({str(top / 'probe')!r}).read())").stdout == "readable\n\n"
        for what, script in tries.items():
            result = as_app(script)
            assert result.returncode == 1, what
            assert "PermissionError" in result.stderr, (what, result.stderr)

    try:
        await reading(top, log_file, steps)
        assert shown(log_file) == ["/r/1"]
    finally:
        shutil.rmtree(top)


async def test_a_link_in_place_of_the_file_or_its_directory_is_never_followed(
    tmp_path: Path,
) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"")
    for planted in ("router/access.log", "router"):
        prefix = tmp_path / planted.replace("/", "-")
        (prefix / "router").mkdir(parents=True, mode=0o700)
        if planted == "router":
            (prefix / "router").rmdir()
            elsewhere = tmp_path / "elsewhere"
            elsewhere.mkdir(exist_ok=True)
            (prefix / "router").symlink_to(elsewhere)
        else:
            (prefix / planted).symlink_to(target)

        log_file = tmp_path / f"{planted.replace('/', '-')}.log"

        async def steps(
            reader: AccessLog, prefix: Path = prefix, log_file: Path = log_file
        ) -> None:
            # Cleared, not followed (nginx, root, would follow it): a plain directory and
            # file of dokuend's in their place, read as ever.
            assert reader.problem is None
            assert not (prefix / "router").is_symlink()
            assert (prefix / "router").stat().st_mode & 0o777 == 0o700
            assert not (prefix / "router" / "access.log").is_symlink()
            append(prefix / "router" / "access.log", request(1))
            await until(lambda: "/r/1" in log_file.read_text(), "the line")

        await reading(prefix, log_file, steps)
        assert (
            f"{prefix / planted} was replaced by a symbolic link: cleared" in log_file.read_text()
        )
    assert target.read_bytes() == b""
    assert not (tmp_path / "elsewhere" / "access.log").exists()


FALLBACK_CONF = """daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
{log_format}
    server {{
        listen 127.0.0.1:{port};
{access_log}
        return 200 "ok\\n";
    }}
}}
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nginx"), reason="mounts a ramfs, runs nginx: root"
)
async def test_where_holes_cannot_be_punched_the_file_is_renamed_and_nginx_reopens_it(
    tmp_path: Path,
) -> None:
    """ramfs cannot punch holes: at ``rotate_at`` bytes the file is renamed, nginx reloaded
    (HUP), the old one read to its end; every line once."""
    prefix = tmp_path / "nginx"
    (prefix / "router").mkdir(parents=True)
    (prefix / "logs").mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(prefix / "router")], check=True)
    port = free_port_block(1)[0]
    conf = prefix / "nginx.conf"
    conf.write_text(
        FALLBACK_CONF.format(
            prefix=prefix,
            port=port,
            log_format=render_log_format("blog", "serving", "3f9a2c1e"),
            access_log=render_access_log("blog"),
        )
    )
    log_file = tmp_path / "dokuen.log"
    mux = LogMux(log_file, 1 << 30, 2)
    master: list[int] = []
    reader = AccessLog(prefix, mux, lambda: master[0] if master else None, rotate_at=4096)
    nginx = None
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(mux.run)
            await tg.start(reader.run)
            nginx = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf)])
            master.append(nginx.pid)
            await until((prefix / "nginx.pid").exists, "nginx")

            async def get(n: int) -> None:
                def once() -> None:
                    with contextlib.suppress(OSError):
                        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                        connection.request("GET", f"/r/{n}", headers={"Host": "blog.localhost"})
                        connection.getresponse().read()
                        connection.close()

                await anyio.to_thread.run_sync(once)

            for n in range(80):  # about 10 KiB of lines: renamed once past 4 KiB
                await get(n)
            await until(lambda: len(shown(log_file)) == 80, "80 lines")
            await until((prefix / "router" / "access.log.old").exists, "the file renamed")
            n = 80
            with anyio.fail_after(10):  # to the new file, once nginx's worker reopened it
                while not os.stat(prefix / "router" / "access.log").st_size:
                    await get(n)
                    n += 1
                    await anyio.sleep(0.02)
            await until(lambda: len(shown(log_file)) == n, f"{n} lines")
            tg.cancel_scope.cancel()
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        subprocess.run(["umount", "-l", str(prefix / "router")], check=False)
    # Each once; the old worker's last lines may come after the new one's first.
    assert sorted(shown(log_file)) == sorted(f"/r/{each}" for each in range(n))
    assert reader.counts["unparsed"] == 0


async def test_a_deleted_directory_is_made_again_and_its_new_file_watched(tmp_path: Path) -> None:
    """What the driver does when someone deleted nginx/ (it makes the prefix again and
    reloads nginx, which opens the new file): the old file is read out, the new one read."""
    log_file = tmp_path / "dokuen.log"
    path = tmp_path / "router" / "access.log"

    async def steps(reader: AccessLog) -> None:
        old = os.open(path, os.O_WRONLY | os.O_APPEND)  # as a worker holds it
        shutil.rmtree(path.parent)
        os.write(old, request(1))  # to the deleted file, before the reload
        os.close(old)
        reader.prepare()
        assert path.parent.stat().st_mode & 0o777 == 0o700
        append(path, request(2))
        await until(lambda: len(shown(log_file)) == 2, "both lines")

    await reading(tmp_path, log_file, steps)
    assert shown(log_file) == ["/r/1", "/r/2"]


async def test_more_than_a_read_and_a_log_writer_behind_lose_nothing(tmp_path: Path) -> None:
    """Lines wait in the file while the log writer is behind (nothing is dropped, as the
    socket's reader had to), and more than CHUNK bytes at once are read a CHUNK a turn, the
    next turn at once (no write of nginx's needed to wake it)."""
    log_file = tmp_path / "dokuen.log"
    path = tmp_path / "router" / "access.log"
    mux = LogMux(log_file, 1 << 30, 2, high_water=1 << 10)
    reader = AccessLog(tmp_path, mux)
    reader.update([("blog", "web.1", 5001)])
    count = accesslog.CHUNK // len(request(0)) * 3 // 2  # one and a half reads
    async with anyio.create_task_group() as tg:
        mux.write_rendered(b'path="/filler" ' + b"x" * (2 << 10) + b"\n")  # behind: no writer yet
        await tg.start(reader.run)
        append(path, b"".join(request(n) for n in range(count)))
        await anyio.sleep(0.3)
        assert reader.counts["lines"] == 0  # waiting in the file, not dropped
        await tg.start(mux.run)
        await until(lambda: len(shown(log_file)) == count + 1, f"{count} lines")
        tg.cancel_scope.cancel()
    assert shown(log_file)[1:] == [f"/r/{n}" for n in range(count)]
    assert reader.turns == 2  # two reads, each a turn of its own


async def test_a_long_backlog_is_read_a_chunk_a_turn_with_the_loop_free_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What waited in the file while dokuend was away (here 2,400 reads' worth) is read one
    CHUNK a turn, each turn leaving the loop to the other tasks: not every read in one call
    (which ran out of stack past about 1,000 reads, and held the loop and the log's memory
    for the whole backlog)."""
    monkeypatch.setattr(accesslog, "CHUNK", 4096)
    log_file = tmp_path / "dokuen.log"
    path = tmp_path / "router" / "access.log"
    path.parent.mkdir(mode=0o700)
    lines = [request(n) for n in range(2400 * 4096 // len(request(0)))]
    path.write_bytes(b"".join(lines))
    ticks = 0

    async def steps(reader: AccessLog) -> None:
        nonlocal ticks
        while reader.counts["lines"] < len(lines):
            ticks += 1  # this task gets turns of the loop while the backlog is read
            await anyio.sleep(0)
        assert reader.turns >= 2400
        await until(lambda: reader._mux.written >= reader._mux.queued, "the log written")

    with anyio.fail_after(60):
        await reading(tmp_path, log_file, steps)
    assert shown(log_file) == [f"/r/{n}" for n in range(len(lines))]
    assert ticks > 100
