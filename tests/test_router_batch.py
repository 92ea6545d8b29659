"""Router lines rendered a batch at a time (``render_batch``, one pattern and one format over
every record of a turn) give, byte for byte, the line ``parse_line`` makes of each
record: for the usual requests, for every odd one the router tests know, for thousands of
random ones, and for a record that hides another record inside its Host header."""

import random
import re

import pytest

from dokuen.proxy import router
from dokuen.proxy.router import dyno_table, parse_line, render_batch, render_line
from tests.test_router import DYNOS, record
from tests.test_router_boundaries import BAIT, HOSTS

STAMP = "2026-12-06T09:01:02.123456+00:00"
TABLE = dyno_table(DYNOS)


def expected(data: bytes, cut: bool = False) -> bytes:
    """The unified log's line of one record, as the listener wrote it one at a time."""
    line = parse_line(data, DYNOS, cut)
    return f"{STAMP} {line.app}[router]: {line.line}\n".encode()


def batch(records: list[bytes]) -> bytes:
    return b"".join(data + b"\n" for data in records)


CHANGES = [
    {},
    {"status": "404", "path": "/a?b=c&d=%22"},
    {"status": "301", "method": "POST", "scheme": "https", "host": "blog.example.com:8443"},
    {"path": '/q"\\x', "connect": "1.234", "service": "60.001", "bytes": "0"},
    {"upstream": "127.0.0.1:5009", "app": "blog-2"},
    {"upstream": "127.0.0.1:5009", "app": "shop"},
    {"upstream": "127.0.0.1:5002", "fwd": "10.20.30.40"},
    {"upstream": "127.0.0.1:5999"},
    {"status": "500", "header": "0.500"},
    {"connect": "0.000", "service": "0.001"},
    {"connect": "0.010", "service": "0.100"},
    {"connect": "10.000", "service": "123456789.999"},
    # not the usual: each goes through parse_line
    {"status": "499"},
    {"status": "502", "header": "-"},
    {"status": "502", "header": "0.003"},
    {"status": "503", "state": "idle", "upstream": "", "header": "", "connect": ""},
    {"status": "503", "state": "maintenance", "upstream": "", "header": ""},
    {"status": "504", "header": "-", "service": "60.001"},
    {"upstream": "127.0.0.1:5001, 127.0.0.1:5002", "connect": "-, 0.001"},
    {"upstream": "127.0.0.1:05001"},
    {"upstream": "127.0.0.1:0"},
    {"connect": "00.012"},
    {"connect": "0.0120"},
    {"service": "1.23"},
    {"path": "/caf\u00e9"},
    {"path": "/esc\x1b[31m"},
    {"path": '/a"b\\c\nd\te'},
    {"host": "BLOG"},
    {"fwd": "::1"},
    {"id": "-"},
    {"method": 'GE"T'},
    *({"host": host} for host in HOSTS),
]
RECORDS = [record(**changes) for changes in CHANGES]


@pytest.mark.parametrize("data", RECORDS)
def test_each_record_alone_is_the_line_parse_line_makes(data: bytes) -> None:
    assert render_line(data, STAMP, TABLE, DYNOS) == expected(data)
    one = render_batch(batch([data]), 1, STAMP, TABLE)
    assert one is None or one == expected(data)


def test_the_usual_requests_are_rendered_by_the_batch_pattern() -> None:
    usual = RECORDS[: CHANGES.index({"status": "499"})]
    rendered = render_batch(batch(usual), len(usual), STAMP, TABLE)
    assert rendered == b"".join(map(expected, usual))
    assert b" dyno=web.1 " in rendered
    assert b" blog-2[router]: " in rendered
    assert b"connect=0ms service=1ms " in rendered
    assert b"connect=10000ms service=123456789999ms " in rendered


def test_a_batch_with_one_odd_record_is_not_rendered_at_all() -> None:
    """Either every record of a batch is one of its lines or it gives None: a batch is
    never rendered with a line missing or out of place."""
    for odd in RECORDS[CHANGES.index({"status": "499"}) :]:
        if render_batch(batch([odd]), 1, STAMP, TABLE) is not None:
            continue
        records = [RECORDS[0], odd, RECORDS[1]]
        assert render_batch(batch(records), 3, STAMP, TABLE) is None


def test_a_record_hidden_in_a_host_header_forges_no_line() -> None:
    """A Host with spaces (older nginx let them through) that holds a whole record of
    another app: the pattern only matches from the start of a record, so the request is
    the blog's, its host quoted, and there is no line of the shop."""
    inner = record(app="shop", host="shop.localhost").split(b"\t")[0].decode()
    for status in ("200", "502"):
        data = record(status=status, header="-", host="x " + inner)
        assert render_batch(batch([data]), 1, STAMP, TABLE) is None
        line = render_line(data, STAMP, TABLE, DYNOS)
        assert line == expected(data)
        assert line.startswith(f"{STAMP} blog[router]: ".encode())
        assert b"shop[router]" not in line


@pytest.mark.parametrize("data", BAIT.values(), ids=BAIT.keys())
def test_backtracking_bait_is_the_same_line_as_alone(data: bytes) -> None:
    data = data[:8192]
    try:
        want = expected(data)
    except ValueError as exc:
        with pytest.raises(ValueError, match=re.escape(str(exc))):
            render_line(data, STAMP, TABLE, DYNOS)
        return
    assert render_line(data, STAMP, TABLE, DYNOS) == want


def test_a_cut_or_multi_line_record_goes_word_by_word() -> None:
    whole = record(path="/long/" + "x" * 9000)[:8192]
    assert render_line(whole, STAMP, TABLE, DYNOS, cut=True) == expected(whole, cut=True)
    assert b"[cut]" in render_line(whole, STAMP, TABLE, DYNOS, cut=True)
    raw = record().replace(b"\t/", b"\t/a\nb")  # a raw newline nginx never sends
    assert render_line(raw, STAMP, TABLE, DYNOS) == expected(raw)
    assert render_line(raw, STAMP, TABLE, DYNOS).count(b"\n") == 1
    with pytest.raises(ValueError, match="no two tabs"):
        render_line(b"", STAMP, TABLE, DYNOS)


USUAL = {
    "app": ["blog", "shop", "blog-2", "b"],
    "state": ["serving"],
    "status": ["200", "404", "301", "500"],
    "method": ["GET", "POST", "PROPFIND"],
    "id": ["3f9a2c1e-48211-1532-7", "00c0ffee-7-1-1", "3f9a2c1e-4194304-18446744073709551615-99"],
    "fwd": ["127.0.0.1", "10.20.30.40"],
    "bytes": ["0", "183", "99999999999"],
    "scheme": ["http", "https"],
    "host": ["blog.localhost", "shop.example.com:8443"],
    "upstream": ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5009"],
    "header": ["0.011", "1.500"],
    "connect": ["0.000", "0.001", "0.012", "0.120", "1.234", "60.001"],
    "service": ["0.000", "0.009", "0.010", "0.999", "12.000"],
}
ODD = {
    "app": ["Blog", "-b", ""],
    "state": ["idle", "maintenance", "x y"],
    "status": ["499", "502", "503", "504", "2x0"],
    "method": ["get", "G T", 'G"'],
    "id": ["-", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "3F9A2C1E-1-1-1", "3f9a2c1e-1-1", "a b"],
    "fwd": ["::1", "1.2.3", 'a"b'],
    "bytes": ["-1", "1 2"],
    "scheme": ["ftp", "http s"],
    "host": ["BLOG", "a b", "x|y", "b\u00fccher", "\t"],
    "upstream": ["", "unix:/s", "127.0.0.1:05001", "127.0.0.1:5001, 127.0.0.1:5002"],
    "header": ["-", "", "0.001, -"],
    "connect": ["00.012", "-", "0.001, 0.002", "", "0.0120", "1.23"],
    "service": ["00.012", "-", "", "1234567890.000"],
}
PLAIN = ["/", "a", "Z", "9", "?", "=", "&", "%", "<", "~"]
ESCAPED = ['"', "\\", "\t", "\n", "\x01", "\x7f", "\u00e9", "\u2028"]


def random_record(rng: random.Random, odd: float) -> bytes:
    """A record of our format, each value the usual kind or, with probability ``odd``,
    an odd one (something nginx writes rarely or never)."""
    changes = {k: rng.choice(ODD[k] if rng.random() < odd else v) for k, v in USUAL.items()}
    chars = PLAIN + (ESCAPED if rng.random() < odd else ['"', "\\"])
    changes["path"] = "".join(rng.choice(chars) for _ in range(rng.randrange(0, 16)))
    return record(**changes)


def test_random_records_in_random_batches_give_the_lines_one_at_a_time() -> None:
    rng = random.Random(17)
    usual = refused = 0
    for _ in range(400):
        odd = rng.choice([0.0, 0.01, 0.1, 0.5])
        records = [random_record(rng, odd) for _ in range(rng.randrange(1, 8))]
        want, lines = b"", []
        for data in records:
            try:
                want += expected(data)
            except ValueError as exc:  # not our format (an app name in capitals): no line
                with pytest.raises(ValueError, match=re.escape(str(exc))):
                    render_line(data, STAMP, TABLE, DYNOS)
                refused += 1
                continue
            lines.append(render_line(data, STAMP, TABLE, DYNOS))
        rendered = render_batch(batch(records), len(records), STAMP, TABLE)
        if rendered is None:
            rendered = b"".join(lines)
        else:
            usual += 1
        assert rendered == want
    assert usual  # some batches went the fast way
    assert refused  # and some held a record that is no line


def test_the_batch_pattern_takes_only_what_the_common_case_takes() -> None:
    """What ``_BATCH`` matches, ``_COMMON`` matches too (the pattern is a subset of it)."""
    rng = random.Random(3)
    for _ in range(2000):
        data = random_record(rng, 0.1)
        if router._BATCH.fullmatch(data + b"\n"):
            assert router._COMMON.fullmatch(data.decode())
