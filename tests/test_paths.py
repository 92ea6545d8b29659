"""isolate/paths.py against a real file system: no link below the root is ever followed,
only regular files are read, sizes are capped, and a tree changes hands without its links
being followed, also while the tree is changed under the walk."""

import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dokuen.errors import UnsafeFile
from dokuen.isolate.paths import chown_tree, is_file, read_file, read_optional

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="only root changes owners")
OTHER = 2100009999  # a uid nothing on the machine uses


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the app's tree holding a secret, as /etc holds shadow."""
    directory = tmp_path / "etc"
    directory.mkdir()
    (directory / "shadow").write_text("root:$y$secret-hash:19000::::::\n")
    (directory / "sub").mkdir()
    (directory / "sub" / "shadow").write_text("root:$y$secret-hash:19000::::::\n")
    return directory


@pytest.fixture
def app(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    (directory / "config" / "deep").mkdir(parents=True)
    (directory / "Procfile").write_text("web: ./server\n")
    (directory / "config" / "deep" / "app.json").write_text("{}\n")
    return directory


def test_a_regular_file_is_read_at_any_depth(app: Path) -> None:
    assert read_file(app, "Procfile", 1024) == b"web: ./server\n"
    assert read_file(app, "config/deep/app.json", 1024) == b"{}\n"
    assert read_file(app, "./config//deep/app.json", 1024) == b"{}\n"


def test_a_missing_file_is_not_found_and_optional_is_none(app: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_file(app, ".env", 1024)
    with pytest.raises(FileNotFoundError):
        read_file(app, "nodir/.env", 1024)
    assert read_optional(app, ".env", 1024) is None


@pytest.mark.parametrize(
    ("component", "relative", "shown"),
    [
        ("config", "config/deep/app.json", "config/ in config/deep/app.json"),
        ("config/deep", "config/deep/app.json", "deep/ in config/deep/app.json"),
        ("config/deep/app.json", "config/deep/app.json", "config/deep/app.json"),
    ],
)
def test_a_link_at_any_component_is_refused_never_followed(
    app: Path, outside: Path, component: str, relative: str, shown: str
) -> None:
    # Each link leads to a place where the rest of the path exists and holds the secret.
    target = {
        "config": outside.parent / "mirror",
        "config/deep": outside / "sub",
        "config/deep/app.json": outside / "shadow",
    }[component]
    if component == "config":
        (target / "deep").mkdir(parents=True)
        (target / "deep" / "app.json").write_text("root:$y$secret-hash\n")
    else:
        (outside / "sub" / "app.json").write_text("root:$y$secret-hash\n")
    victim = app / component
    if victim.is_dir():
        os.rename(victim, app / f"{component}.moved")
    else:
        victim.unlink()
    victim.symlink_to(target)
    with pytest.raises(UnsafeFile) as info:
        read_file(app, relative, 1 << 20)
    assert str(info.value) == f"{shown} is a symbolic link (to {target}); commit the file itself"
    assert "secret" not in str(info.value)


def test_a_dangling_link_is_refused_not_missing(app: Path) -> None:
    (app / ".env").symlink_to("nowhere")
    with pytest.raises(UnsafeFile, match=r"^\.env is a symbolic link \(to nowhere\)"):
        read_optional(app, ".env", 1024)


def test_a_link_target_that_is_not_printable_is_shown_escaped(app: Path) -> None:
    (app / ".env").symlink_to("\x1b[31mred\n")
    with pytest.raises(UnsafeFile) as info:
        read_file(app, ".env", 1024)
    assert str(info.value) == (
        ".env is a symbolic link (to \\x1b[31mred\\n); commit the file itself"
    )


def test_a_fifo_is_refused_without_waiting_for_a_writer(app: Path) -> None:
    os.mkfifo(app / "Procfile.fifo")
    began = time.monotonic()
    with pytest.raises(UnsafeFile) as info:
        read_file(app, "Procfile.fifo", 1024)
    assert time.monotonic() - began < 1
    assert str(info.value) == (
        "Procfile.fifo is a FIFO, not a regular file; make it a regular file"
    )


def test_a_socket_a_directory_and_a_file_on_the_way_are_refused(app: Path) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(app / "sock"))
        with pytest.raises(UnsafeFile, match=r"^sock is a socket, not a regular file"):
            read_file(app, "sock", 1024)
    with pytest.raises(UnsafeFile) as info:
        read_file(app, "config", 1024)
    assert str(info.value) == "config is a directory, not a regular file; make it a regular file"
    with pytest.raises(UnsafeFile) as info:
        read_file(app, "Procfile/x", 1024)
    assert str(info.value) == (
        "Procfile/ in Procfile/x is a regular file, not a directory; make it a directory"
    )


@ROOT_ONLY
def test_a_device_is_refused_and_never_opened(app: Path) -> None:
    os.mknod(app / "Procfile.dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null
    with pytest.raises(UnsafeFile) as info:
        read_file(app, "Procfile.dev", 1024)
    assert str(info.value).startswith("Procfile.dev is a character device, not a regular file")


def test_the_size_limit_holds(app: Path) -> None:
    (app / ".env").write_bytes(b"x" * 4096)
    assert read_file(app, ".env", 4096) == b"x" * 4096
    with pytest.raises(UnsafeFile) as info:
        read_file(app, ".env", 4095)
    assert str(info.value) == ".env is larger than 4095 bytes; keep it under that"
    (app / "big").write_bytes(b"x" * (2 << 20))
    with pytest.raises(UnsafeFile, match=r"^big is larger than 1 MiB; keep it under that"):
        read_file(app, "big", 1 << 20)


@pytest.mark.parametrize("relative", ["/etc/shadow", "../etc/shadow", "config/../../etc", ""])
def test_only_paths_below_the_root_are_taken(app: Path, relative: str) -> None:
    with pytest.raises(ValueError, match="is not a relative path below its root"):
        read_file(app, relative, 1024)


@contextlib.contextmanager
def swapping(directory: Path, target: Path) -> Iterator[Callable[[], int]]:
    """While the block runs, ``directory`` is swapped for a link to ``target`` and back,
    again and again, as a build running beside dokuend could do. Yields how many swaps
    were made so far."""
    stop = threading.Event()
    swaps = 0
    moved = directory.with_name(directory.name + ".real")
    link = directory.with_name(directory.name + ".link")
    link.symlink_to(target)

    def swap() -> None:
        nonlocal swaps
        while not stop.is_set():
            os.rename(directory, moved)
            os.rename(link, directory)  # now a link to the target
            os.rename(directory, link)
            os.rename(moved, directory)  # the real directory again
            swaps += 1

    thread = threading.Thread(target=swap)
    thread.start()
    try:
        yield lambda: swaps
    finally:
        stop.set()
        thread.join()


def test_a_directory_swapped_for_a_link_during_reads_never_leaks(app: Path, outside: Path) -> None:
    (outside / "sub" / "app.json").write_text("root:$y$secret-hash\n")
    read, refused = 0, 0
    with swapping(app / "config" / "deep", outside / "sub") as swaps:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (read < 50 or refused < 50):
            try:
                data = read_file(app, "config/deep/app.json", 1024)
            except (UnsafeFile, FileNotFoundError):
                refused += 1
            else:
                assert data == b"{}\n"  # never the secret
                read += 1
        assert swaps() > 0
    # Both sides were seen: the test raced the swaps, or it proves nothing.
    assert read >= 50
    assert refused >= 50


@ROOT_ONLY
def test_chown_tree_changes_links_themselves_never_their_targets(app: Path, outside: Path) -> None:
    (app / "to-file").symlink_to(outside / "shadow")
    (app / "config" / "to-dir").symlink_to(outside)
    (app / "config" / "fifo").touch()
    chown_tree(app, OTHER, OTHER)
    for path in [app, app / "Procfile", app / "config/deep/app.json", app / "config/to-dir"]:
        assert (path.lstat().st_uid, path.lstat().st_gid) == (OTHER, OTHER), path
    assert (app / "to-file").lstat().st_uid == OTHER  # the link itself
    for path in [outside, outside / "shadow", outside / "sub", outside / "sub" / "shadow"]:
        assert (path.stat().st_uid, path.stat().st_gid) == (0, 0), path


@ROOT_ONLY
def test_chown_tree_never_enters_a_directory_swapped_for_a_link(app: Path, outside: Path) -> None:
    for index in range(50):  # a wide directory: the walk spends time in it
        (app / "config" / "deep" / f"file{index}").touch()
    with swapping(app / "config" / "deep", outside / "sub") as swaps:
        deadline = time.monotonic() + 5
        rounds = 0
        while time.monotonic() < deadline and rounds < 300:
            chown_tree(app, OTHER + rounds % 2, OTHER)
            rounds += 1
        assert swaps() > 0
    for path in [outside, outside / "shadow", outside / "sub", outside / "sub" / "shadow"]:
        assert path.stat().st_uid == 0, path
    assert (app / "config" / "deep" / "file0").stat().st_uid in (OTHER, OTHER + 1)


# -- is_file: a bundled bin/detect's [[ -f FILE ]], as root, on an app's tree -----------


def test_is_file_says_what_test_f_says_inside_the_tree(app: Path) -> None:
    (app / "index.html").symlink_to("config/deep/app.json")  # a link to a file of its own
    (app / "up").symlink_to("config/deep")
    (app / "config" / "back").symlink_to("../Procfile")  # climbs, and stays inside
    (app / "chain").symlink_to("index.html")
    (app / "dangling").symlink_to("config/none")
    (app / "self").symlink_to(".")
    assert is_file(app, "Procfile")
    assert is_file(app, "config/deep/app.json")
    assert is_file(app, "index.html")
    assert is_file(app, "up/app.json")
    assert is_file(app, "config/back")
    assert is_file(app, "chain")
    assert is_file(app, "self/Procfile")
    assert not is_file(app, "dangling")
    assert not is_file(app, "missing")
    assert not is_file(app, "config")  # a directory
    assert not is_file(app, "self")
    assert not is_file(app, "Procfile/x")  # through a file
    os.mkfifo(app / "fifo")
    assert not is_file(app, "fifo")  # and never opened: a FIFO would wait for a writer


@pytest.mark.parametrize(
    ("name", "target", "relative", "shown"),
    [
        ("requirements.txt", "{outside}/shadow", "requirements.txt", "requirements.txt"),
        ("requirements.txt", "../etc/shadow", "requirements.txt", "requirements.txt"),
        ("config", "{outside}", "config/shadow", "config/ in config/shadow"),
        ("index.html", "config/../../etc/shadow", "index.html", "index.html"),
    ],
    ids=["absolute", "climbing out", "a directory on the way", "climbing out after a turn"],
)
def test_a_link_out_of_the_tree_is_refused_alike_whether_its_target_exists(
    app: Path, outside: Path, name: str, target: str, relative: str, shown: str
) -> None:
    """The same line with the secret there and gone: root never looks at the target."""
    link = app / name
    if link.is_dir() and not link.is_symlink():
        for path in sorted(link.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        link.rmdir()
    text = target.format(outside=outside)
    link.symlink_to(text)
    with pytest.raises(UnsafeFile) as present:
        is_file(app, relative)
    (outside / "shadow").unlink()
    (outside / "sub" / "shadow").unlink()
    with pytest.raises(UnsafeFile) as missing:
        is_file(app, relative)
    assert str(present.value) == str(missing.value)
    assert str(present.value) == f"{shown} is a symbolic link (to {text}); commit the file itself"
    assert "secret" not in str(present.value)


def test_a_loop_of_links_is_refused_in_one_line(app: Path) -> None:
    (app / "a").symlink_to("b")
    (app / "b").symlink_to("a")
    with pytest.raises(UnsafeFile, match=r"^a leads through more than 40 symbolic links; "):
        is_file(app, "a")
