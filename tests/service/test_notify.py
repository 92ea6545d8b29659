"""sd_notify's pure half (addresses, messages, the watchdog period) and the sender against
a real datagram socket."""

import socket
from pathlib import Path

import pytest

from dokuen.service.notify import (
    NotifySocket,
    format_message,
    parse_address,
    watchdog_interval,
)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@/org/freedesktop/systemd1/notify/123", b"\0/org/freedesktop/systemd1/notify/123"),
        ("@x", b"\0x"),
    ],
)
def test_addresses(text: str, address: str | bytes) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["", "@", "run/notify", "vsock:2:1234"])
def test_addresses_dokuend_cannot_use(text: str) -> None:
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        parse_address(text)


def test_one_message_is_key_value_lines() -> None:
    assert format_message({"READY": "1", "STATUS": "2 apps, 3/3 processes running"}) == (
        b"READY=1\nSTATUS=2 apps, 3/3 processes running"
    )
    assert format_message({"WATCHDOG": "1"}) == b"WATCHDOG=1"


@pytest.mark.parametrize(
    "fields", [{"STATUS": "two\nlines"}, {"ready": "1"}, {"": "1"}, {"A=B": "1"}]
)
def test_a_message_that_would_be_misread_is_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="sd_notify"):
        format_message(fields)


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "400000"}, 0.2),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4343"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "٣٠"}, None),  # digits, but not ASCII ones
    ],
)
def test_the_watchdog_pings_at_half_its_period(
    environ: dict[str, str], interval: float | None
) -> None:
    assert watchdog_interval(environ, 4242) == interval


def test_the_sender_sends_one_datagram_per_message(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    sender = NotifySocket(parse_address(path))
    assert sender.send({"READY": "1", "STATUS": "ok"})
    assert sender.send({"WATCHDOG": "1"})
    assert sock.recv(4096) == b"READY=1\nSTATUS=ok"
    assert sock.recv(4096) == b"WATCHDOG=1"
    sender.close()


def test_an_abstract_address_works() -> None:
    name = f"@dokuen-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(parse_address(name))
        sock.settimeout(5)
        sender = NotifySocket(parse_address(name))
        assert sender.send({"STOPPING": "1"})
        assert sock.recv(4096) == b"STOPPING=1"
        sender.close()


def test_a_manager_that_went_away_costs_a_warning_not_an_error(tmp_path: Path) -> None:
    sender = NotifySocket(str(tmp_path / "nobody-listens"))
    assert not sender.send({"WATCHDOG": "1"})
    assert not sender.send({"WATCHDOG": "1"})
    sender.close()


def test_a_full_queue_drops_the_message_instead_of_blocking(
    receiver: tuple[socket.socket, str],
) -> None:
    _sock, path = receiver
    sender = NotifySocket(path)
    results = [sender.send({"STATUS": "x" * 1000}) for _ in range(5000)]
    assert results[0]
    assert not results[-1]
    sender.close()
