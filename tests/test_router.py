"""Router lines: the lines of nginx's access log (in dokuend's log format) to Heroku router
lines."""

import json
import re
from typing import Any

import pytest

from dokuen.proxy import router
from dokuen.proxy.router import TRUNCATED, UPSTREAM, WORDS, RouterLine, parse_line

DYNOS = {5001: ("blog", "web.1"), 5002: ("blog", "web.2"), 5009: ("shop", "web.1")}
NORMAL = {
    "app": "blog",
    "state": "serving",
    "status": "200",
    "method": "GET",
    "id": "3f9a2c1e-48211-1532-7",
    "fwd": "127.0.0.1",
    "bytes": "1234",
    "scheme": "http",
    "host": "blog.localhost",
    "upstream": "127.0.0.1:5001",
    "header": "0.011",
    "connect": "0.000",
    "service": "0.012",
    "path": "/",
}
TAIL = 'request_id=3f9a2c1e-48211-1532-7 fwd="127.0.0.1"'
# A Heroku router line, word by word: key=value, the value plain or double-quoted.
WORD = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^" ]*)(?: |$)')
ORDER = "at method path host request_id fwd dyno connect service status bytes protocol"


def escape_json(text: str | bytes) -> bytes:
    """What nginx's ``escape=json`` makes of a value (ngx_escape_json): a backslash before
    a quote or a backslash, short escapes, ``\\u00XX`` in capitals, every other byte as is."""
    raw = text.encode() if isinstance(text, str) else text
    short = {0x22: b'\\"', 0x5C: b"\\\\", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t"}
    short |= {0x08: b"\\b", 0x0C: b"\\f"}
    return b"".join(short.get(b, b"\\u%04X" % b if b < 0x20 else bytes([b])) for b in raw)


def record(**changes: Any) -> bytes:
    """A line as nginx writes it with dokuend's log_format (without its newline)."""
    fields = {**NORMAL, **changes}
    words = b" ".join(escape_json(fields[key]) for key in list(NORMAL)[:9])
    tried = b"|".join(escape_json(fields[key]) for key in list(NORMAL)[9:13])
    return words + b"\t" + tried + b"\t" + escape_json(fields["path"])


def line(**changes: Any) -> str:
    return parse_line(record(**changes), DYNOS).line


def keys(text: str) -> list[str]:
    """The keys of a router line, checking that it is nothing but key=value words."""
    found = WORD.findall(text)
    assert "".join(f"{k}={v} " for k, v in found).rstrip() == text
    return [key for key, _ in found]


def test_the_log_format_is_the_one_these_records_are_made_by() -> None:
    assert len(WORDS) == 9
    assert len(UPSTREAM) == 4
    format_line = router.render_log_format("blog-2", "idle", "3f9a2c1e")
    assert format_line == (
        "log_format dokuen_router_blog-2 escape=json 'blog-2 idle $status $request_method "
        "3f9a2c1e-$pid-$connection-$connection_requests $remote_addr $bytes_sent $scheme "
        "$host\\t" + "|".join(UPSTREAM) + "\\t$request_uri';\n"
    )
    assert router.render_access_log("blog-2") == (
        "    access_log router/access.log dokuen_router_blog-2 buffer=64k flush=100ms;\n"
    )
    # The header the app gets is the same expression as the line's request_id.
    assert router.request_id("3f9a2c1e") in format_line


@pytest.mark.parametrize(
    ("app", "state", "nonce"),
    [
        ("blog;", "serving", "3f9a2c1e"),
        ("blog x", "serving", "3f9a2c1e"),
        ("Blog", "serving", "3f9a2c1e"),
        ("blog", "serving'", "3f9a2c1e"),
        ("blog", "down", "3f9a2c1e"),
        ("blog", "serving", "3F9A2C1E"),
        ("blog", "serving", "3f9a2c1"),
        ("blog", "serving", "3f9a2c1e0"),
        ("blog", "serving", "$pid"),
        ("blog", "serving", "3f9a2c1e'"),
    ],
)
def test_nothing_unchecked_reaches_a_log_format(app: str, state: str, nonce: str) -> None:
    """The literals of an app's format are checked, never escaped: anything else is refused."""
    with pytest.raises(ValueError, match=r"not an app|not a request id nonce"):
        router.render_log_format(app, state, nonce)


def test_an_access_log_names_only_a_checked_app() -> None:
    with pytest.raises(ValueError, match="not an app name"):
        router.render_access_log("blog buffer=1k")


def test_a_normal_request_is_heroku_s_router_line() -> None:
    assert parse_line(record(), DYNOS) == RouterLine(
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
    assert " connect=1234ms service=60001ms " in line(connect="1.234", service="60.001")


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
        ("/del\x7f", r'path="/del\u007f"'),
        ("/csi\x9bx", r'path="/csi\u009bx"'),
        ("/sep\u2028x", r'path="/sep\u2028x"'),
        ("/caf\u00e9", 'path="/caf\u00e9"'),
    ],
)
def test_quotes_and_control_characters_are_escaped_never_passed(path: str, shown: str) -> None:
    text = line(path=path)
    assert shown in text
    assert text.isprintable()


def test_a_hostile_path_forges_no_word_and_no_line() -> None:
    """Quotes, spaces, tabs, newlines and a forged line of another app, in the path: it all
    stays inside path="...", on one line, and the words are the real ones."""
    forged = '/x" host=shop.localhost status=500 dyno=web.9\t\n2026 shop[router]: at=info "\\'
    text = line(path=forged)
    assert "\n" not in text
    assert "\t" not in text
    assert keys(text) == ORDER.split()
    words = dict(WORD.findall(text))
    assert words["host"] == "blog.localhost"
    assert words["status"] == "200"
    assert words["dyno"] == "web.1"
    assert json.loads(words["path"]) == forged


def test_escaped_values_are_shown_as_the_value_quoted() -> None:
    """What nginx escaped is shown exactly as ``_quote`` shows the value itself (the fast
    path for printable ASCII and the slow one for the rest agree), for every character
    alone and inside text."""
    for code in [*range(0x300), 0x2028, 0x2029, 0xFEFF, 0x1F600]:
        for text in (chr(code), f"a{chr(code)}b", f"/p?q={chr(code)}"):
            escaped = escape_json(text).decode()
            assert router._escaped(escaped) == router._quote(text), repr(text)
            assert line(path=text).split(" path=", 1)[1].startswith(router._quote(text) + " ")


def test_a_path_cut_by_the_read_buffer_keeps_what_arrived() -> None:
    whole = record(path="/long/" + "x" * 9000)
    text = parse_line(whole[:8192], DYNOS, cut=True).line
    assert " status=200 " in text
    assert f'x{TRUNCATED}" host=blog.localhost ' in text


@pytest.mark.parametrize("cut", range(1, 13))
def test_a_cut_inside_an_escape_sequence_still_parses(cut: int) -> None:
    whole = record(path="/q" + "\x01" * 10)  # each one \u0001 in the record
    text = parse_line(whole[: len(whole) - cut], DYNOS, cut=True).line
    kept = 10 - (cut + 5) // 6  # whole escapes (6 characters each) left before the cut
    escapes = "\\u0001" * kept
    assert f'path="/q{escapes}{TRUNCATED}"' in text
    half = record(path='/q"\\' * 4)  # \" and \\, two characters each
    text = parse_line(half[: len(half) - cut], DYNOS, cut=True).line
    assert keys(text) == ORDER.split()


@pytest.mark.parametrize(
    "host", ["b\u00fccher.localhost", 'a"b.localhost', "a\\b", "BLOG", "a" * 300]
)
def test_a_host_that_is_not_a_plain_name_is_quoted(host: str) -> None:
    assert f" host={router._quote(host)} " in line(host=host)


def test_a_host_with_a_space_stays_one_word() -> None:
    """nginx refuses such a host; were it not to, the host is the last of the words."""
    text = line(host="blog.localhost evil=1")
    assert ' host="blog.localhost evil=1" ' in text
    assert keys(text) == ORDER.split()


def test_odd_one_word_values_are_quoted() -> None:
    text = line(method='GE"T', bytes="12=3", status="2x0", id="-")
    assert 'method="GE\\"T"' in text
    assert 'bytes="12=3"' in text
    assert "status=2x0" in text  # a token: plain
    assert keys(text) == ORDER.split()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "no two tabs"),
        (b"<190>Dec  6 09:01:02 other: blog", "no two tabs"),
        (b'{"app": "blog", "path": "/"}', "no two tabs"),
        (b"blog serving 200\tx|y|z|w\t/", "words missing"),
        (b"<190>Dec  6 09:01:02 dokuen: " + record(), "no app name"),
        (record().replace(b"|0.011|", b"|"), "words missing"),
        (record(app=""), "no app name"),
        (record(app="Blog;"), "no app name"),
        (record(app="blog\n"), "no app name"),
        (record(app="-blog"), "no app name"),
    ],
)
def test_what_is_not_our_format_is_refused(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_line(data, DYNOS)


def test_bytes_that_are_not_utf8_are_replaced_not_fatal() -> None:
    data = record(path=b"/\xff\xfe")
    assert 'path="/\ufffd\ufffd"' in parse_line(data, DYNOS).line


def test_quote_fast_path_agrees_with_json_escaping() -> None:
    """The plain-ASCII shortcut in _quote gives what the full escaping gives, for every
    character alone and inside text (quotes, backslashes, controls, non-ASCII)."""

    def escaped(text: str) -> str:
        quoted = json.dumps(text, ensure_ascii=False)
        return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in quoted)

    for code in [*range(0x300), 0x2028, 0x2029, 0xFEFF]:
        for text in (chr(code), f"a{chr(code)}b", f"/p?q={chr(code)}"):
            assert router._quote(text) == escaped(text), repr(text)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"status": "404", "path": "/a?b=c&d=%22"},
        {"status": "301", "method": "POST", "scheme": "https", "host": "blog.example.com:8443"},
        {"path": '/q"\\x', "connect": "1.234", "service": "60.001", "bytes": "0"},
        {"upstream": "127.0.0.1:5009", "app": "blog-2"},  # another app's port: no dyno
        {"upstream": "127.0.0.1:5002", "fwd": "10.20.30.40"},
        {"status": "500", "header": "0.500"},
    ],
)
def test_the_common_case_is_what_word_by_word_gives(changes: dict[str, str]) -> None:
    """The one-match shortcut for most requests and the word-by-word way agree."""
    text = record(**changes).decode()
    common = router._common(text, DYNOS)
    assert common is not None
    assert common == router._word_by_word(text, DYNOS, cut=False)


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "499"},
        {"status": "503", "state": "idle", "upstream": "", "header": "", "connect": ""},
        {"upstream": "127.0.0.1:5001, 127.0.0.1:5002", "connect": "-, 0.001"},
        {"path": "/caf\u00e9"},
        {"host": "BLOG"},
        {"fwd": "::1"},
    ],
)
def test_the_rest_goes_word_by_word(changes: dict[str, str]) -> None:
    assert router._common(record(**changes).decode(), DYNOS) is None


@pytest.mark.parametrize(
    "request_id",
    [
        "3f9a2c1e-1-1-1",
        "00000000-4194304-18446744073709551615-18446744073709551615",
        "ffffffff-2147483647-1532-7",
    ],
)
def test_every_id_nginx_makes_is_taken_by_the_common_case(request_id: str) -> None:
    """NONCE-$pid-$connection-$connection_requests: 8 hex digits, then a pid and two
    counters up to 64 bits (nginx's ngx_atomic_uint_t and ngx_uint_t)."""
    text = record(id=request_id).decode()
    common = router._common(text, DYNOS)
    assert common is not None
    assert f" request_id={request_id} " in common.line
    assert common == router._word_by_word(text, DYNOS, cut=False)


@pytest.mark.parametrize(
    ("request_id", "shown"),
    [
        ("0f1e2d3c4b5a69788796a5b4c3d2e1f0", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"),  # $request_id
        ("3F9A2C1E-1-1-1", "3F9A2C1E-1-1-1"),
        ("3f9a2c1-1-1-1", "3f9a2c1-1-1-1"),
        ("3f9a2c1e0-1-1-1", "3f9a2c1e0-1-1-1"),
        ("3f9a2c1e-12345678901-1-1", "3f9a2c1e-12345678901-1-1"),
        ("3f9a2c1e-1-123456789012345678901-1", "3f9a2c1e-1-123456789012345678901-1"),
        ("3f9a2c1e-1-1", "3f9a2c1e-1-1"),
        ("3f9a2c1e-1-1-1-1", "3f9a2c1e-1-1-1-1"),
        ("3f9a2c1e--1-1", "3f9a2c1e--1-1"),
        ("3f9a2c1e-1-1-x", "3f9a2c1e-1-1-x"),
        ("-", "-"),
        ("", ""),
        ('3f9a2c1e-1-1-1"x', '"3f9a2c1e-1-1-1\\"x"'),  # no space: the words are split at one
    ],
)
def test_an_id_of_another_shape_goes_word_by_word_and_forges_nothing(
    request_id: str, shown: str
) -> None:
    """An id nginx does not make (an older dokuend's ``$request_id``, an adopted nginx's) is
    no common line; it is shown as a token, or quoted, and the words stay the real ones."""
    text = record(id=request_id).decode()
    assert router._common(text, DYNOS) is None
    assert router._BATCH.fullmatch(text.encode() + b"\n") is None
    found = parse_line(text.encode(), DYNOS).line
    assert f" request_id={shown} " in found
    assert keys(found) == ORDER.split()
    assert dict(WORD.findall(found))["status"] == "200"
