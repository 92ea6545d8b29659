"""Table tests for the port pool: range parsing, port choice with an injected probe."""

import socket
from collections.abc import Callable

import pytest

from dokuen.errors import DokuenError, SettingsError
from dokuen.settings import PortRange, parse_port_range
from dokuen.supervise.ports import HOST, PortPool, choose_port, port_is_free

TEN = PortRange(5000, 5009)


def free_except(*busy: int) -> Callable[[int], bool]:
    """A probe that says every port is free except ``busy`` (ports someone else uses)."""
    return lambda port: port not in busy


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5000-5999", PortRange(5000, 5999)),
        (" 5000 - 5999 ", PortRange(5000, 5999)),
        ("1024-1024", PortRange(1024, 1024)),
        ("1024-65535", PortRange(1024, 65535)),
        ("65535-65535", PortRange(65535, 65535)),
        ("08000-08010", PortRange(8000, 8010)),
    ],
)
def test_parse_port_range(text: str, expected: PortRange) -> None:
    assert parse_port_range(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a range like 5000-5999"),
        ("5000", "is not a range like 5000-5999"),
        ("5000-", "is not a range like 5000-5999"),
        ("a-b", "is not a range like 5000-5999"),
        ("5000:5999", "is not a range like 5000-5999"),
        ("5000-5999-6000", "is not a range like 5000-5999"),
        ("-5000-5999", "is not a range like 5000-5999"),
        ("５000-5999", "is not a range like 5000-5999"),  # noqa: RUF001
        ("100000-100001", "is not a range like 5000-5999"),
        ("5999-5000", "must satisfy 1024 <= first <= last <= 65535"),
        ("80-90", "must satisfy 1024 <= first <= last <= 65535"),
        ("1023-2000", "must satisfy 1024 <= first <= last <= 65535"),
        ("60000-65536", "must satisfy 1024 <= first <= last <= 65535"),
        ("0-0", "must satisfy 1024 <= first <= last <= 65535"),
    ],
)
def test_parse_port_range_errors(text: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_port_range(text)
    assert str(info.value) == f"DOKUEN_PORT_RANGE={text!r} {message}"


@pytest.mark.parametrize(
    ("port", "inside"),
    [(4999, False), (5000, True), (5009, True), (5010, False), ("5000", False)],
)
def test_port_range_contains(port: object, inside: bool) -> None:
    assert (port in TEN) is inside


@pytest.mark.parametrize(("ports", "size"), [(TEN, 10), (PortRange(5000, 5000), 1)])
def test_port_range_len(ports: PortRange, size: int) -> None:
    assert len(ports) == size


@pytest.mark.parametrize(
    ("taken", "preferred", "cursor", "busy", "expected"),
    [
        pytest.param(set(), None, 5000, (), 5000, id="first-from-cursor"),
        pytest.param(set(), None, 5004, (), 5004, id="scan-starts-at-cursor"),
        pytest.param(set(), 5007, 5000, (), 5007, id="preferred-kept-when-free"),
        pytest.param({5007}, 5007, 5003, (), 5003, id="preferred-taken-scan-from-cursor"),
        pytest.param(set(), 5007, 5003, (5007,), 5003, id="preferred-busy-scan-from-cursor"),
        pytest.param(set(), 6000, 5003, (), 5003, id="preferred-out-of-range"),
        pytest.param({5003, 5004}, None, 5003, (5005,), 5006, id="skips-taken-and-busy"),
        pytest.param({5008}, None, 5008, (5009,), 5000, id="wraps-around"),
        pytest.param({5000, 5001, 5008, 5009}, None, 5008, (5002,), 5003, id="wraps-then-skips"),
        pytest.param(set(range(5000, 5010)), 5003, 5000, (), None, id="all-taken"),
        pytest.param(set(), None, 5005, tuple(range(5000, 5010)), None, id="all-busy"),
        pytest.param(
            set(range(5000, 5005)), None, 5002, tuple(range(5005, 5010)), None, id="taken-or-busy"
        ),
    ],
)
def test_choose_port(
    taken: set[int],
    preferred: int | None,
    cursor: int,
    busy: tuple[int, ...],
    expected: int | None,
) -> None:
    assert choose_port(TEN, taken, preferred, cursor, free_except(*busy)) == expected


def test_choose_port_probes_each_port_at_most_once() -> None:
    probed: list[int] = []

    def is_free(port: int) -> bool:
        probed.append(port)
        return False

    assert choose_port(TEN, {5001}, None, 5007, is_free) is None
    assert probed == [5007, 5008, 5009, 5000, 5002, 5003, 5004, 5005, 5006]


def test_pool_never_hands_out_a_taken_port() -> None:
    pool = PortPool(PortRange(5000, 5004), is_free=free_except())
    ports = [pool.allocate() for _ in range(5)]
    assert sorted(ports) == [5000, 5001, 5002, 5003, 5004]
    assert pool.taken == set(ports)
    with pytest.raises(DokuenError, match=r"^no free port in 5000-5004 \(widen DOKUEN_PORT_RANGE"):
        pool.allocate()


def test_pool_preferred_port() -> None:
    pool = PortPool(TEN, is_free=free_except())
    assert pool.allocate(preferred=5005) == 5005
    assert pool.allocate(preferred=5005) == 5000  # taken: scan instead
    assert pool.allocate() == 5001


def test_pool_released_port_is_handed_out_last() -> None:
    pool = PortPool(PortRange(5000, 5002), is_free=free_except())
    assert [pool.allocate(), pool.allocate()] == [5000, 5001]
    pool.release(5000)
    assert 5000 not in pool.taken
    assert pool.allocate() == 5002
    assert pool.allocate() == 5000  # wrapped round to the released port
    with pytest.raises(DokuenError):
        pool.allocate()


def test_pool_does_not_reuse_the_port_just_released() -> None:
    pool = PortPool(PortRange(5000, 5002), is_free=free_except())
    assert pool.allocate() == 5000
    pool.release(5000)
    assert pool.allocate() == 5001
    pool.release(5001)
    assert pool.allocate() == 5002
    pool.release(5002)
    assert pool.allocate() == 5000  # wraps round


def test_pool_release_makes_a_full_pool_usable_again() -> None:
    pool = PortPool(PortRange(5000, 5001), is_free=free_except())
    pool.allocate()
    pool.allocate()
    with pytest.raises(DokuenError):
        pool.allocate()
    pool.release(5001)
    pool.release(5001)  # releasing twice is harmless
    assert pool.allocate() == 5001
    assert pool.taken == {5000, 5001}


def test_pool_skips_ports_something_else_listens_on() -> None:
    pool = PortPool(PortRange(5000, 5003), is_free=free_except(5000, 5002))
    assert [pool.allocate(), pool.allocate()] == [5001, 5003]
    with pytest.raises(DokuenError):
        pool.allocate()


def test_port_is_free_with_a_real_listener() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((HOST, 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_is_free(port) is False
    finally:
        listener.close()
    assert port_is_free(port) is True
