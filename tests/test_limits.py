"""The app limits: DOKUEN_MEMORY_LIMIT and DOKUEN_PROCESS_LIMIT read, and what is written."""

import pytest

from dokuen.errors import SettingsError
from dokuen.isolate.limits import (
    limit_files,
    parse_memory_limit,
    parse_process_limit,
    show_size,
)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 << 20),
        ("1G", 1 << 30),
        ("1g", 1 << 30),
        ("4096K", 4 << 20),
        ("2T", 2 << 40),
        ("67108864", 64 << 20),
        (" 64M ", 64 << 20),
    ],
)
def test_memory_sizes(text: str, size: int) -> None:
    assert parse_memory_limit(text) == size


@pytest.mark.parametrize("text", ["", "lots", "512MB", "1.5G", "-1G", "3M", "1K", "0", "M"])
def test_bad_memory_sizes_name_the_variable_and_the_form(text: str) -> None:
    with pytest.raises(SettingsError) as error:
        parse_memory_limit(text)
    assert str(error.value) == (
        f"DOKUEN_MEMORY_LIMIT={text!r} is not a memory size of at least 4M (use a number of "
        "bytes, or one with K, M, G or T: 512M, 1G)"
    )


def test_process_limits() -> None:
    assert parse_process_limit("1") == 1
    assert parse_process_limit("256") == 256
    assert parse_process_limit("4194304") == 4194304


@pytest.mark.parametrize("text", ["0", "-5", "ten", "", "1.5", "4194305"])
def test_bad_process_limits(text: str) -> None:
    with pytest.raises(SettingsError, match=r"DOKUEN_PROCESS_LIMIT=.* is not a number of proc"):
        parse_process_limit(text)


def test_show_size() -> None:
    assert [show_size(n) for n in (512 << 20, 1 << 30, 1536 << 20, 1000)] == [
        "512M",
        "1G",
        "1536M",
        "1000",
    ]


def test_what_v2_writes() -> None:
    both = frozenset({"memory", "pids"})
    assert limit_files(2, both, 64 << 20, 10) == [
        ("memory.max", str(64 << 20)),
        ("memory.swap.max", "0"),
        ("pids.max", "10"),
    ]
    assert limit_files(2, both, None, None) == [
        ("memory.max", "max"),
        ("memory.swap.max", "max"),
        ("pids.max", "max"),
    ]
    assert limit_files(2, frozenset(), 64 << 20, 10) == []  # no controllers: nothing to write


def test_what_v1_writes() -> None:
    controllers = frozenset({"memory", "pids", "freezer"})
    assert limit_files(1, controllers, 64 << 20, None) == [
        ("memory.limit_in_bytes", str(64 << 20)),
        ("memory.memsw.limit_in_bytes", str(64 << 20)),
        ("pids.max", "max"),
    ]
    assert limit_files(1, controllers, None, 5)[:2] == [
        ("memory.limit_in_bytes", "-1"),
        ("memory.memsw.limit_in_bytes", "-1"),
    ]
