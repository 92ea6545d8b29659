"""The router access log under attack and fault (proxy/accesslog.py, logplace.py): the file
truncated behind dokuend's back (logrotate's copytruncate), deleted, or replaced by root with
a link, a FIFO, a directory or another file while it is read; the offset note (router/read)
a FIFO, a link, garbage or past the end; punches that fail (an append-only file: what a
full ext4 does too); a line longer than a read still being written. Real files, inotify
and the log multiplexer: each ends with a log line or a status problem, the reader still
running, no line lost and none shown twice beyond what the module documents."""

import fcntl
import os
import shutil
import struct
from pathlib import Path

import anyio
import pytest

from dokuen.proxy import accesslog
from dokuen.proxy.accesslog import AccessLog
from tests.test_accesslog import append, reading, request, until

pytestmark = pytest.mark.anyio


def shown(log_file: Path) -> list[str]:
    """The request paths of the router lines in the unified log, in order."""
    text = log_file.read_text() if log_file.exists() else ""
    return [
        line.split('path="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if 'path="' in line
    ]


def events(log_file: Path) -> str:
    return "\n".join(line for line in log_file.read_text().splitlines() if "[dokuen]" in line)


async def test_a_copytruncate_is_noticed_and_the_new_lines_read_from_the_start(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "dokuen.log"
    path = tmp_path / "router" / "access.log"

    async def steps(reader: AccessLog) -> None:
        append(path, b"".join(request(n) for n in range(50)))
        await until(lambda: len(shown(log_file)) == 50, "50 lines")
        shutil.copyfile(path, tmp_path / "access.log.1")  # logrotate's copytruncate
        os.truncate(path, 0)
        append(path, b"".join(request(n) for n in range(50, 53)))  # shorter than what was read
        await until(lambda: len(shown(log_file)) == 53, "the lines after the truncation")
        append(path, request(53))
        await until(lambda: len(shown(log_file)) == 54, "and after them")
        assert reader.problem is None

    await reading(tmp_path, log_file, steps)
    assert shown(log_file) == [f"/r/{n}" for n in range(54)]


@pytest.mark.parametrize("kind", ["deleted", "symlink", "fifo", "directory", "another file"])
async def test_what_is_put_at_the_file_s_name_is_cleared_never_followed(
    tmp_path: Path, kind: str
) -> None:
    """While nginx's worker still holds the old file: its lines are read to the end, the
    name holds a new plain file of dokuend's, read as well; a link's target is untouched, a
    FIFO never opened (the test would hang), a directory moved aside whole. A deleted file
    is left deleted (a rm -rf of nginx/ is not fought) until the driver makes it again."""
    log_file = tmp_path / "dokuen.log"
    path = tmp_path / "router" / "access.log"
    target = tmp_path / "target"
    target.write_bytes(b"precious\n")

    async def steps(reader: AccessLog) -> None:
        worker = os.open(path, os.O_WRONLY | os.O_APPEND)  # as nginx's worker holds it
        os.write(worker, request(1))
        await until(lambda: len(shown(log_file)) == 1, "the first line")
        planted = path.with_name("planted")
        if kind == "deleted":
            path.unlink()
        elif kind == "symlink":
            planted.symlink_to(target)
            planted.replace(path)
        elif kind == "fifo":
            os.mkfifo(planted)
            planted.replace(path)
        elif kind == "directory":
            planted.mkdir()
            (planted / "inside").write_text("kept")
            path.unlink()
            planted.rename(path)
        else:
            planted.write_bytes(request(2))  # a logrotate's create: a file with a line
            planted.replace(path)
        os.write(worker, request(3))  # the old worker, until nginx reopens
        if kind == "deleted":  # not made again at once: a rm -rf of nginx/ would fail
            await until(lambda: len(shown(log_file)) == 2, "the deleted file's line")
            assert not path.exists()
            reader.prepare()  # what the driver does when it makes nginx/ again
        os.close(worker)

        def fresh() -> bool:
            return path.is_file() and not path.is_symlink()

        await until(fresh, "a plain file at the name again")
        append(path, request(4))  # the new workers, after the reload
        want = 4 if kind == "another file" else 3
        await until(lambda: len(shown(log_file)) == want, "every line")
        assert reader.problem is None

    await reading(tmp_path, log_file, steps)
    expected = (
        ["/r/1", "/r/2", "/r/3", "/r/4"] if kind == "another file" else ["/r/1", "/r/3", "/r/4"]
    )
    assert sorted(shown(log_file)) == sorted(expected)
    assert target.read_bytes() == b"precious\n"
    what = {"fifo": "a FIFO", "symlink": "a symbolic link", "directory": "a directory"}
    if kind != "deleted":  # the driver says that one (nginx/... was deleted; made it again)
        said = f"replaced by {what.get(kind, kind)}"
        assert f"access.log was {said}: reading a new file in its place" in events(log_file)
    if kind == "directory":
        (moved,) = path.parent.glob("access.log.moved-*")
        assert (moved / "inside").read_text() == "kept"


async def test_a_link_put_in_place_of_the_directory_while_read_is_cleared(
    tmp_path: Path,
) -> None:
    """router/ renamed away and a link to elsewhere put at its name: nginx (root) would
    write through it at its next reload; dokuend clears it, makes its directory again and
    reads the new file there."""
    log_file = tmp_path / "dokuen.log"
    router = tmp_path / "router"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    async def steps(reader: AccessLog) -> None:
        append(router / "access.log", request(1))
        await until(lambda: len(shown(log_file)) == 1, "the first line")
        router.rename(tmp_path / "router.away")
        router.symlink_to(elsewhere)

        def mended() -> bool:
            return router.is_dir() and not router.is_symlink() and (router / "access.log").exists()

        await until(mended, "the directory made again")
        append(router / "access.log", request(2))
        await until(lambda: len(shown(log_file)) == 2, "the line in the new file")
        assert reader.problem is None

    await reading(tmp_path, log_file, steps)
    assert shown(log_file) == ["/r/1", "/r/2"]
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("note", ["fifo", "symlink", "garbage", "past the end", "another"])
async def test_a_bad_offset_note_is_never_followed_and_loses_no_line(
    tmp_path: Path, note: str
) -> None:
    """router/read (where holes cannot be punched) made a FIFO or a link by root, or
    spoiled: the reader neither blocks nor follows it, and reads the file from its first
    line: lines may be shown twice, none is lost."""
    log_file = tmp_path / "dokuen.log"
    router = tmp_path / "router"
    router.mkdir(mode=0o700)
    path = router / "access.log"
    path.write_bytes(b"".join(request(n) for n in range(3)))
    path.chmod(0o600)
    target = tmp_path / "target"
    target.write_text(f"{path.stat().st_ino} 0\n")
    read = router / "read"
    if note == "fifo":
        os.mkfifo(read)
    elif note == "symlink":
        read.symlink_to(target)
    elif note == "garbage":
        read.write_bytes(b"\x00\xffnot a note")
    elif note == "past the end":
        read.write_text(f"{path.stat().st_ino} {1 << 40}\n")
    else:
        read.write_text(f"{path.stat().st_ino + 1} 100\n")  # another file's

    async def steps(reader: AccessLog) -> None:
        await until(lambda: len(shown(log_file)) == 3, "the three lines")
        assert not os.path.lexists(read)  # taken away, whatever it was

    with anyio.fail_after(10):
        await reading(tmp_path, log_file, steps)
    assert shown(log_file) == ["/r/0", "/r/1", "/r/2"]
    assert target.read_text() == f"{path.stat().st_ino} 0\n"  # never written through


async def test_a_note_is_written_without_following_what_stands_at_its_name(
    tmp_path: Path,
) -> None:
    """Where holes cannot be punched, the note is written at the end: a link root put at
    its name is replaced, not written through."""
    log_file = tmp_path / "dokuen.log"
    target = tmp_path / "target"
    target.write_text("precious")

    async def steps(reader: AccessLog) -> None:
        reader._punches = False  # as on ramfs (tests/test_accesslog.py mounts one)
        append(reader.path, request(1))
        await until(lambda: len(shown(log_file)) == 1, "the line")
        reader.path.with_name("read").symlink_to(target)

    reader = await reading(tmp_path, log_file, steps)
    note = reader.path.with_name("read")
    assert not note.is_symlink()
    assert note.read_text() == f"{reader.path.stat().st_ino} {len(request(1))}\n"
    assert target.read_text() == "precious"


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_APPEND_FL = 0x80086601, 0x40086602, 0x20


def append_only(path: Path, on: bool) -> bool:
    """Set or clear the file's append-only flag (root, a file system that has it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = struct.unpack("l", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8))[0]
        flags = flags | FS_APPEND_FL if on else flags & ~FS_APPEND_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("l", flags))
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="sets a file's append-only flag: root")
async def test_punches_that_fail_keep_the_lines_shown_and_are_done_later(tmp_path: Path) -> None:
    """An append-only file refuses a punch (EPERM; a full ext4 refuses one with ENOSPC):
    the lines are shown all the same, the status says the space is not given back, and
    once punches work again the hole covers every line read meanwhile."""
    log_file = tmp_path / "dokuen.log"
    path = tmp_path / "router" / "access.log"

    async def steps(reader: AccessLog) -> None:
        if not append_only(path, on=True):
            pytest.skip("no append-only flag on this file system")
        try:
            append(path, b"".join(request(n) for n in range(100)))
            await until(lambda: len(shown(log_file)) == 100, "100 lines")
            await until(lambda: reader.status()["problem"] is not None, "the problem")
            assert "read lines not freed (Operation not permitted)" in str(reader.problem)
            assert os.stat(path).st_blocks > 0
        finally:
            append_only(path, on=False)
        append(path, request(100))
        await until(lambda: reader.problem is None, "punched again")
        await until(lambda: os.stat(path).st_blocks * 512 < 8 << 10, "every line read, a hole")

    await reading(tmp_path, log_file, steps)
    assert shown(log_file) == [f"/r/{n}" for n in range(101)]


async def test_a_line_longer_than_a_read_still_being_written_holds_the_reader_up(
    tmp_path: Path,
) -> None:
    """nginx writes lines whole, 8 KiB at most; a longer one, half written: its first
    part is shown cut, its tail (when it comes) counted unparsed, and the next line shown."""
    log_file = tmp_path / "dokuen.log"
    path = tmp_path / "router" / "access.log"
    huge = request(1).replace(b"/r/1", b"/r/1" + b"x" * (accesslog.CHUNK + 10))

    async def steps(reader: AccessLog) -> None:
        append(path, huge[: accesslog.CHUNK + 100])
        await until(lambda: len(shown(log_file)) == 1, "the cut line")
        append(path, huge[accesslog.CHUNK + 100 :] + request(2))
        await until(lambda: len(shown(log_file)) == 2, "the next line")
        assert reader.counts["unparsed"] <= 1

    await reading(tmp_path, log_file, steps)
    assert [p[:4] for p in shown(log_file)] == ["/r/1", "/r/2"]


async def test_a_line_without_its_newline_waits_across_a_restart(tmp_path: Path) -> None:
    """nginx's last write cut short (its worker killed mid-line, or a slow disk): the
    part waits, unread and unpunched, through a stop; the next reader shows it once whole."""
    log_file = tmp_path / "dokuen.log"
    path = tmp_path / "router" / "access.log"
    last = request(2)

    async def first(reader: AccessLog) -> None:
        append(path, request(1) + last[:30])
        await until(lambda: len(shown(log_file)) == 1, "the whole line")
        await anyio.sleep(accesslog.PUNCH_AFTER * 3)  # punched up to the part, not past it
        assert len(shown(log_file)) == 1

    async def second(reader: AccessLog) -> None:
        append(path, last[30:])
        await until(lambda: len(shown(log_file)) == 2, "the line, whole")

    await reading(tmp_path, log_file, first)
    await reading(tmp_path, log_file, second)
    assert shown(log_file) == ["/r/1", "/r/2"]
