"""Router lines as an attacker's request would try them: a Host header with quotes,
backslashes, a space or a `|` forges no word of the line; a record cut anywhere (the
read buffer's MSG_TRUNC) over a hostile path gives one well-formed line or is refused;
inputs that would make a backtracking pattern explode parse like any other."""

import json

import pytest

from dokuen.proxy.router import TRUNCATED, parse_line
from tests.test_router import DYNOS, ORDER, WORD, keys, line, record

# What ngx_http_validate_host lets through: no '/', no byte <= 0x20 but the space in
# older versions, no DEL; quotes, backslashes and the router format's separators pass.
HOSTS = [
    'blog.localhost" status=500 dyno=web.9 x="',
    "blog.localhost status=500",
    "a|b|c|d\\",
    "\\u0009\\",
]


@pytest.mark.parametrize("host", HOSTS)
def test_a_hostile_host_forges_no_word(host: str) -> None:
    text = line(host=host, path='/p" status=302')
    assert keys(text) == ORDER.split()
    words = dict(WORD.findall(text))
    assert json.loads(words["host"]) == host
    assert json.loads(words["path"]) == '/p" status=302'
    assert (words["status"], words["dyno"]) == ("200", "web.1")


def test_a_record_cut_anywhere_is_one_line_or_refused() -> None:
    path = '/\\" status=500\t\n\x01é' * 8
    whole = record(host='h"\\|', path=path)
    for end in range(0, len(whole) + 1):
        try:
            found = parse_line(whole[:end], DYNOS, cut=True)
        except ValueError:
            assert whole[:end].count(b"\t") < 2  # refused only when the path never began
            continue
        assert found.app == "blog"
        assert keys(found.line) == ORDER.split()
        shown = json.loads(dict(WORD.findall(found.line))["path"])
        assert shown.endswith(TRUNCATED)
        assert path.startswith(shown.removesuffix(TRUNCATED))  # only whole characters


BAIT = {
    "backslashes": record(path="\\" * 4000),
    "unfinished escapes": record(path="x").rsplit(b"\t", 1)[0] + b"\t" + b"\\u00" * 2000,
    "quotes": record(path='"' * 4000),
    "control bytes": record(path="\x01" * 1300),
    "a host of dots": record(host="." * 8000),
    "a port too long": record(host="a" * 250 + ":" + "1" * 8000),
    "retries": record(upstream="127.0.0.1:5001, " * 500),
    "no tab": b"blog " * 1600,
}


@pytest.mark.parametrize("data", BAIT.values(), ids=BAIT.keys())
@pytest.mark.parametrize("cut", [False, True])
def test_backtracking_bait_parses_like_any_record(data: bytes, cut: bool) -> None:
    """Each of these is read in linear time (under a millisecond for 8 KiB, measured in
    the review): a pattern that backtracked would take years on them, not pass."""
    for _ in range(20):
        try:
            found = parse_line(data[:8192], DYNOS, cut=cut)
        except ValueError:
            continue
        assert keys(found.line) == ORDER.split()
