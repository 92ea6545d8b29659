"""Router lines: nginx's datagrams (as its syslog writer sends them) to Heroku router lines."""

import json
from typing import Any

import pytest

from dokuen.proxy import router
from dokuen.proxy.router import FIELDS, TRUNCATED, RouterLine, parse_datagram

HEADER = b"<190>Dec  6 09:01:02 dokuen: "
DYNOS = {5001: ("blog", "web.1"), 5002: ("blog", "web.2"), 5009: ("shop", "web.1")}
NORMAL = {
    "app": "blog",
    "state": "serving",
    "method": "GET",
    "host": "blog.localhost",
    "id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "fwd": "127.0.0.1",
    "upstream": "127.0.0.1:5001",
    "header": "0.011",
    "connect": "0.000",
    "service": "0.012",
    "time": "0.012",
    "status": "200",
    "bytes": "1234",
    "scheme": "http",
    "path": "/",
}
TAIL = 'request_id=0f1e2d3c4b5a69788796a5b4c3d2e1f0 fwd="127.0.0.1"'


def datagram(**changes: Any) -> bytes:
    """A datagram as nginx's escape=json format writes it, fields in FIELDS order."""
    fields = {**NORMAL, **changes}
    body = ",".join(f'"{key}":{json.dumps(fields[key])}' for key, _ in FIELDS)
    return HEADER + ("{" + body + "}").encode()


def line(**changes: Any) -> str:
    return parse_datagram(datagram(**changes), DYNOS).line


def test_a_normal_request_is_heroku_s_router_line() -> None:
    assert parse_datagram(datagram(), DYNOS) == RouterLine(
        "blog",
        f'at=info method=GET path="/" host=blog.localhost {TAIL} dyno=web.1 connect=0ms '
        "service=12ms status=200 bytes=1234 protocol=http",
        "web.1",
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"status": "404", "path": "/nope"}, 'at=info method=GET path="/nope" '),
        # The app's own 502 (it sent a header) is the app's answer, not a router error.
        ({"status": "502", "header": "0.003"}, "at=info method=GET "),
        ({"status": "502", "header": "-"}, 'at=error code=H13 desc="Connection closed without'),
        ({"status": "504", "header": "-", "service": "60.001"}, 'at=error code=H12 desc="Req'),
        (
            {"status": "503", "state": "idle", "upstream": "", "header": ""},
            'at=error code=H14 desc="No web processes running" ',
        ),
        (
            {"status": "503", "state": "maintenance", "upstream": "", "header": ""},
            'at=info code=H80 desc="Maintenance mode" ',
        ),
        ({"status": "499"}, 'sock=client at=warning code=H27 desc="Client Request Interrupted"'),
        ({"method": "POST", "status": "201"}, "at=info method=POST "),
    ],
)
def test_outcomes(changes: dict[str, str], expected: str) -> None:
    assert line(**changes).startswith(expected)


def test_no_upstream_leaves_dyno_connect_and_service_empty_as_heroku_does() -> None:
    text = line(status="503", state="maintenance", upstream="", header="", connect="", service="")
    assert " dyno= connect= service= status=503 " in text


def test_a_retried_request_names_the_process_that_answered_last() -> None:
    text = line(upstream="127.0.0.1:5001, 127.0.0.1:5002", connect="-, 0.001", service="0, 0.020")
    assert " dyno=web.2 connect=1ms service=20ms " in text


@pytest.mark.parametrize(
    ("upstream", "dyno"),
    [("127.0.0.1:5009", ""), ("127.0.0.1:5999", ""), ("unix:/x.sock", ""), ("", "")],
)
def test_a_port_that_is_not_this_app_s_web_process_names_no_dyno(upstream: str, dyno: str) -> None:
    assert f" dyno={dyno} " in line(upstream=upstream)


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ('/a"b', r'path="/a\"b"'),
        ("/back\\slash", r'path="/back\\slash"'),
        ("/esc\x1b[31mred", r'path="/esc\u001b[31mred"'),
        ("/new\nline\r", r'path="/new\nline\r"'),
        ("/csi\x9bx", r'path="/csi\u009bx"'),
        ("/sep\u2028x", r'path="/sep\u2028x"'),
        ("/caf\u00e9", 'path="/caf\u00e9"'),
    ],
)
def test_quotes_and_control_characters_are_escaped_never_passed(path: str, shown: str) -> None:
    text = line(path=path)
    assert shown in text
    assert text.isprintable()


def test_a_path_cut_by_the_datagram_limit_keeps_what_arrived() -> None:
    whole = datagram(path="/long/" + "x" * 5000)
    cut = whole[:4096]
    text = parse_datagram(cut, DYNOS).line
    assert " status=200 " in text
    assert f'x{TRUNCATED}"' in text


@pytest.mark.parametrize("cut", range(1, 8))
def test_a_cut_inside_an_escape_sequence_still_parses(cut: int) -> None:
    whole = datagram(path="/q" + "\x01" * 10)  # each one \u0001 in the datagram
    text = parse_datagram(whole[: len(whole) - 2 - cut], DYNOS).line
    kept = 10 - (cut + 5) // 6  # whole escapes (6 characters each) left before the cut
    escapes = "\\u0001" * kept
    assert f'path="/q{escapes}{TRUNCATED}"' in text


@pytest.mark.parametrize(
    "host", ["b\u00fccher.localhost", "blog.localhost evil=1", "BLOG", "a" * 300]
)
def test_a_host_that_is_not_a_plain_name_is_quoted(host: str) -> None:
    assert f" host={json.dumps(host, ensure_ascii=False)} " in line(host=host)


def test_the_method_and_numbers_are_quoted_when_odd() -> None:
    text = line(method="GET /x", bytes="12 status=200")
    assert 'method="GET /x"' in text
    assert 'bytes="12 status=200"' in text


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "not a syslog message"),
        (b"<190>Dec  6 09:01:02 other: {}", "not a syslog message"),
        (b"hello: {}", "not a syslog message"),
        (HEADER + b"not json", "not JSON"),
        (HEADER + b"[1, 2]", "not a JSON object"),
        (HEADER + b'{"app": 1}', "not a JSON object of strings"),
        (datagram(app=""), "no app name"),
        (datagram(app="Blog; evil"), "no app name"),
        (datagram(app="blog\n"), "no app name"),
    ],
)
def test_what_is_not_our_format_is_refused(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_datagram(data, DYNOS)


def test_bytes_that_are_not_utf8_are_replaced_not_fatal() -> None:
    data = datagram(path="/PLACEHOLDER").replace(b"PLACEHOLDER", b"\xff\xfe")
    assert 'path="/\ufffd\ufffd"' in parse_datagram(data, DYNOS).line


def test_quote_fast_path_agrees_with_json_escaping() -> None:
    """The plain-ASCII shortcut in _quote gives what the full escaping gives, for every
    character alone and inside text (quotes, backslashes, controls, non-ASCII)."""

    def escaped(text: str) -> str:
        quoted = json.dumps(text, ensure_ascii=False)
        return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in quoted)

    for code in [*range(0x300), 0x2028, 0x2029, 0xFEFF]:
        for text in (chr(code), f"a{chr(code)}b", f"/p?q={chr(code)}"):
            assert router._quote(text) == escaped(text), repr(text)
