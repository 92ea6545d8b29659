"""Router lines, the pure half: what nginx logs for each request and how one of its
lines becomes a Heroku router line (``at=info method=GET path="/" ... status=200``).

nginx writes each request as a line of its buffered access log (``router/access.log`` in
its prefix, which dokuend reads: accesslog.py), in a format each app's file declares for
it (``log_format dokuen_router_APP escape=json``): nine space-separated words whose values
cannot hold a space (the app and its state, literals of the app's format, then what nginx
knows of the request, the host last), a tab, what the web processes did (``|``-separated),
a tab, and the path as escape=json wrote it, last so that a line cut short loses only
the path's end. escape=json turns a quote into ``\\"``, a backslash into ``\\\\`` and every
byte below 0x20 (a tab, a newline) into an escape, so the two tabs are nginx's own and no
value can end its quotes, start a word of the line, split it or start another line. What
remains for dokuend (``parse_line``) is mostly to put the words in Heroku's order: a value that is
printable ASCII is already escaped as the line shows it; anything else (UTF-8, DEL,
``\\u`` escapes) is unescaped and quoted again, as the line always quotes. The I/O half is
accesslog.py.

The request id (``X-Request-Id``, and ``request_id=`` in the line) is
``NONCE-$pid-$connection-$connection_requests``: a worker's pid, nginx's connection counter
(one for every worker of a master's cycle, started again by each reload), the request's
number on its connection (HTTP/2 streams too), and a nonce the driver draws for each set of
files it writes, which tells apart two cycles whose workers got the same pids. Unlike
``$request_id`` (16 random bytes: OpenSSL's RAND_bytes and a ``getpid()`` a request) it
costs nginx next to nothing.
"""

import codecs
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter

from dokuen.supervise.logmux import ROUTER_SOURCE

LOG_FORMAT_PREFIX = "dokuen_router_"  # and the app's name: each app's file has its own
STATES = ("serving", "idle", "maintenance")  # of an app, as its format writes it
NONCE = re.compile(r"[0-9a-f]{8}")
# Relative to nginx's prefix ($DOKUEN_HOME/nginx). The directory is dokuend's alone (0700):
# nginx's master (root) opens the file, its workers (nobody) write through the descriptor
# they inherit, and no app can read another's requests or write a line.
ACCESS_DIR = "router"
ACCESS_LOG = "router/access.log"
# Each worker gathers lines in a buffer of its own and writes them when it is full or
# FLUSH after the first: one write() for hundreds of requests (a line longer than the
# buffer is written on its own).
BUFFER = "64k"
FLUSH = "100ms"
ERROR_LOG = "logs/error.log"  # nginx's, in the same prefix: it says what it did not write
SOURCE = ROUTER_SOURCE  # APP[router]: in the unified log
# The words before the first tab, in order; values that hold no space (nginx refuses
# spaces and control characters in a request line and a Host header). The host is last,
# so that even a host with a space would stay one word. The app, its state and the request
# id's nonce are literals of the app's own format (two ``set``s a request cost nginx more).
WORDS = (
    "{app}",
    "{state}",
    "$status",
    "$request_method",
    "{request_id}",
    "$remote_addr",
    "$bytes_sent",
    "$scheme",
    "$host",
)
# After the first tab: nginx's own (an address list, times), never what a client sent.
UPSTREAM = (
    "$upstream_addr",
    "$upstream_header_time",
    "$upstream_connect_time",
    "$upstream_response_time",
)
PATH = "$request_uri"  # after the second tab, the rest of the line
TRUNCATED = "[cut]"
_APP = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_HOST = re.compile(r"[a-z0-9.-]{1,253}(?::[0-9]{1,5})?")
_ADDRESS = re.compile(r"127\.0\.0\.1:([0-9]{1,5})")
_METHOD = re.compile(r"[A-Z]{1,20}")
_TOKEN = re.compile(r"[A-Za-z0-9._-]{0,64}")
# Printable ASCII as escape=json leaves it: no bare quote or backslash, and no \u escape
# (nginx writes those in capitals; the line in small letters, as json.dumps does).
_ESCAPED = re.compile(r'(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\bfnrt])*')
# A value cut inside an escape: the whole escapes and characters before the cut.
_WHOLE = re.compile(r"(?:[^\\]|\\u[0-9a-fA-F]{4}|\\[^u])*")
# A request id as request_id() has nginx make it: NONCE-$pid-$connection-$connection_requests
_ID = r"[0-9a-f]{8}-[0-9]{1,10}-[0-9]{1,20}-[0-9]{1,20}"
# Most requests, whole: answered by the app's one web process it was sent to at the first
# try, the address, host, path and times plain. Such a line is put together at once.
_COMMON = re.compile(
    r"([a-z](?:[a-z0-9-]{0,61}[a-z0-9])?) serving ([0-9]{3}) ([A-Z]{1,20}) (" + _ID + ") "
    r"([0-9.]{7,15}) ([0-9]{1,19}) (https?) ([a-z0-9.-]{1,253}(?::[0-9]{1,5})?)\t"
    r"127\.0\.0\.1:([0-9]{1,5})\|[0-9.]+\|([0-9]{1,9})\.([0-9]{3})\|([0-9]{1,9})\.([0-9]{3})\t"
    r'((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\bfnrt])*)'
)
_ROUTER_ERRORS = frozenset(("499", "502", "503", "504"))  # maybe not at=info: see _outcome
# Printable ASCII but the quote and the backslash: quoted as is (json.dumps would agree).
_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
# _COMMON over the raw bytes of whole lines, as nginx wrote them (``^``...``\n``), and for
# a subset of it: no 499/502/503/504, a port
# and times with no leading zero, so that each value is shown as it was sent (12 ms is
# ``0.012``: 0.0 and 12). What it does not take goes through parse_line.
_MS = rb"(?:0\.(?:00([0-9])|0([1-9][0-9])|([1-9][0-9]{2}))|([1-9][0-9]{0,8})\.([0-9]{3}))"
_BATCH = re.compile(
    rb"^([a-z](?:[a-z0-9-]{0,61}[a-z0-9])?) serving ((?!499|50[234])[0-9]{3}) ([A-Z]{1,20}) "
    rb"(" + _ID.encode() + rb") ([0-9.]{7,15}) ([0-9]{1,19}) (https?) "
    rb"([a-z0-9.-]{1,253}(?::[0-9]{1,5})?)"
    rb"\t127\.0\.0\.1:([1-9][0-9]{0,4})\|[0-9.]+\|" + _MS + rb"\|" + _MS + rb"\t"
    # the path, as _ESCAPED, unrolled (twice as fast): plain runs between escapes
    rb'([\x20\x21\x23-\x5b\x5d-\x7e]*(?:\\["\\bfnrt][\x20\x21\x23-\x5b\x5d-\x7e]*)*)\n',
    re.MULTILINE,
)
# A row of _BATCH's groups (app 0, status 1, method 2, id 3, fwd 4, bytes 5, scheme 6,
# host 7, port 8, connect 9-13, service 14-18, path 19) and the dyno (20), in the line's order.
_SHOWN = itemgetter(0, 2, 19, 7, 3, 4, 20, *range(9, 19), 1, 5, 6)
_DYNO_KEY = itemgetter(0, 8)
_LINE = (
    b'%s[router]: at=info method=%s path="%s" host=%s request_id=%s fwd="%s" dyno=%s '
    b"connect=%s%s%s%s%sms service=%s%s%s%s%sms status=%s bytes=%s protocol=%s\n"
)
DynoTable = Mapping[tuple[bytes, bytes], bytes]  # (app, port) to the web process's name


def request_id(nonce: str) -> str:
    """What nginx makes the request id of, in the header the app gets and in the line.
    Raises ValueError for a nonce that is not 8 hexadecimal digits."""
    if not NONCE.fullmatch(nonce):
        raise ValueError(f"not a request id nonce: {nonce!r}")
    return f"{nonce}-$pid-$connection-$connection_requests"


def render_log_format(app: str, state: str, nonce: str) -> str:
    """The ``log_format`` directive of one app's file (at the http level, which includes
    it), with the app, its state and the request id's nonce as literals: one line a request.
    Raises ValueError when one of them is not of its grammar (nothing is escaped)."""
    if not _APP.fullmatch(app) or state not in STATES:
        raise ValueError(f"not an app and its state: {app!r} {state!r}")
    words = " ".join(WORDS).format(app=app, state=state, request_id=request_id(nonce))
    body = words + "\\t" + "|".join(UPSTREAM) + "\\t" + PATH
    return f"log_format {LOG_FORMAT_PREFIX}{app} escape=json '{body}';\n"


def render_access_log(app: str) -> str:
    """The ``access_log`` directive of an app's server blocks: the one file of every app,
    each with its own format. The buffer and flush are the same in every one (nginx keeps
    one buffer for a file, with the first directive's size)."""
    if not _APP.fullmatch(app):
        raise ValueError(f"not an app name: {app!r}")
    name = LOG_FORMAT_PREFIX + app
    return f"    access_log {ACCESS_LOG} {name} buffer={BUFFER} flush={FLUSH};\n"


@dataclass(frozen=True)
class RouterLine:
    """One request as the unified log shows it."""

    app: str
    line: str
    dyno: str | None = None


def parse_line(data: bytes, dynos: Mapping[int, tuple[str, str]], cut: bool = False) -> RouterLine:
    """The router line for one line of nginx's access log (without its newline).

    ``dynos`` maps a web process's port to its app and name (``("blog", "web.1")``);
    ``cut``: the line was longer than dokuend reads at most (its path lost its end).
    Raises ValueError when it is not one of our log format's lines.
    """
    body = data
    if cut:  # a character cut in two is left out, not shown as U+FFFD before the [cut]
        text = codecs.getincrementaldecoder("utf-8")("replace").decode(body)
    else:
        text = body.decode("utf-8", errors="replace")
    return (None if cut else _common(text, dynos)) or _word_by_word(text, dynos, cut)


def dyno_table(dynos: Mapping[int, tuple[str, str]]) -> dict[tuple[bytes, bytes], bytes]:
    """``dynos`` (port to app and process name) as ``render_batch`` looks them up."""
    return {(app.encode(), b"%d" % port): name.encode() for port, (app, name) in dynos.items()}


def render_batch(
    batch: bytes | memoryview, lines: int, stamp: str, table: DynoTable
) -> bytes | None:
    """The unified log's lines (``STAMP APP[router]: ...``, each ending in a newline) of a
    batch of ``lines`` lines of nginx's, each ending in a newline, when every one is a
    request ``_BATCH`` takes; None when one is not (each then goes through ``render_line``).

    One pattern over the whole batch and one format a line, all in C: no Python code runs
    per line."""
    rows = _BATCH.findall(batch)
    if len(rows) != lines:  # each match is one whole line: so one of them was not taken
        return None
    names = zip(map(table.get, map(_DYNO_KEY, rows), repeat(b"")))
    form = stamp.encode() + b" " + _LINE
    return b"".join(map(form.__mod__, map(_SHOWN, map(tuple.__add__, rows, names))))


def render_line(
    data: bytes,
    stamp: str,
    table: DynoTable,
    dynos: Mapping[int, tuple[str, str]],
    cut: bool = False,
) -> bytes:
    """``render_batch`` of one line (without its newline), whatever it holds: the line
    ``parse_line`` makes of it. Raises ValueError when it is not one of our format's."""
    if not cut and b"\n" not in data:
        one = render_batch(data + b"\n", 1, stamp, table)
        if one is not None:
            return one
    line = parse_line(data, dynos, cut)
    return f"{stamp} {line.app}[{SOURCE}]: {line.line}\n".encode()


def _word_by_word(text: str, dynos: Mapping[int, tuple[str, str]], cut: bool) -> RouterLine:
    """The line of any line of our format."""
    parts = text.split("\t", 2)
    if len(parts) != 3:
        raise ValueError("not the router log format (no two tabs)")
    words, upstreams, path = parts
    fields = words.split(" ", len(WORDS) - 1)
    tried = upstreams.split("|")
    if len(fields) != len(WORDS) or len(tried) != len(UPSTREAM):
        raise ValueError("not the router log format (words missing)")
    app, state, status, method, request_id, fwd, sent, scheme, host = fields
    if not _APP.fullmatch(app):
        raise ValueError(f"no app name in the message ({app[:70]!r})")
    upstream, header, connect, service = tried
    dyno = None
    if match := _ADDRESS.fullmatch(upstream.rpartition(", ")[2]):
        owner = dynos.get(int(match[1]))
        dyno = owner[1] if owner is not None and owner[0] == app else None
    if cut:
        path = _WHOLE.match(path)[0]  # type: ignore[index]  # it matches "" at least
    shown = _escaped(path)
    if cut:
        shown = shown[:-1] + TRUNCATED + '"'
    contacted = bool(upstream)
    shown_words = [
        *_outcome(state, status, header),
        f"method={method if _METHOD.fullmatch(method) else _requoted(method)}",
        f"path={shown}",
        # nginx refuses hosts that are not names, but say so rather than trust it.
        f"host={host if _HOST.fullmatch(host) else _requoted(host)}",
        f"request_id={_token(request_id)}",
        f"fwd={_escaped(fwd)}",
        f"dyno={dyno or ''}",
        f"connect={_milliseconds(connect) if contacted else ''}",
        f"service={_milliseconds(service) if contacted else ''}",
        f"status={_token(status)}",
        f"bytes={_token(sent)}",
        f"protocol={_token(scheme)}",
    ]
    return RouterLine(app, " ".join(shown_words), dyno)


def _common(text: str, dynos: Mapping[int, tuple[str, str]]) -> RouterLine | None:
    """The line of a request that ``_COMMON`` matches, as ``parse_line`` puts it
    together word by word; None for any other."""
    match = _COMMON.fullmatch(text)
    if match is None or match[2] in _ROUTER_ERRORS:
        return None
    app, status, method, request_id, fwd, sent, scheme, host, port, *times, path = match.groups()
    owner = dynos.get(int(port))
    dyno = owner[1] if owner is not None and owner[0] == app else None
    connect, service = int(times[0] + times[1]), int(times[2] + times[3])  # 0.012 s: 12 ms
    return RouterLine(
        app,
        f'at=info method={method} path="{path}" host={host} request_id={request_id} '
        f'fwd="{fwd}" dyno={dyno or ""} connect={connect}ms service={service}ms '
        f"status={status} bytes={sent} protocol={scheme}",
        dyno,
    )


def _outcome(state: str, status: str, header: str) -> tuple[str, ...]:
    """``at=info``, or Heroku's code and description where nginx itself answered."""
    if status == "200":  # the common case, decided at once
        return ("at=info",)
    if state == "maintenance" and status == "503":
        return ("at=info", "code=H80", 'desc="Maintenance mode"')
    if state == "idle" and status == "503":
        return ("at=error", "code=H14", 'desc="No web processes running"')
    if status == "499":
        return ("sock=client", "at=warning", "code=H27", 'desc="Client Request Interrupted"')
    # No response header from any web process: the 502 or 504 is nginx's, not the app's.
    answered = header.rpartition(", ")[2] not in ("-", "")
    if status == "504" and not answered:
        return ("at=error", "code=H12", 'desc="Request timeout"')
    if status == "502" and not answered:
        return ("at=error", "code=H13", 'desc="Connection closed without response"')
    return ("at=info",)


def _milliseconds(seconds: str) -> str:
    """nginx's ``0.012`` (or ``0.001, 0.012`` after a retry: the last try) as ``12ms``."""
    last = seconds.rpartition(", ")[2]
    try:
        return f"{round(float(last) * 1000)}ms"
    except ValueError:  # "-": no connection was made
        return ""


def _token(escaped: str) -> str:
    return escaped if _TOKEN.fullmatch(escaped) else _requoted(escaped)


def _escaped(escaped: str) -> str:
    """A value as escape=json wrote it, double-quoted as ``_quote`` quotes the value."""
    if _ESCAPED.fullmatch(escaped):  # the common case: already what _quote would give
        return f'"{escaped}"'
    return _requoted(escaped)


def _requoted(escaped: str) -> str:
    """``_quote`` of the value that escape=json wrote as ``escaped``."""
    try:
        value = str(json.loads(f'"{escaped}"'))
    except ValueError:  # nginx does not write such a thing; show it, harmless, all the same
        value = escaped
    return _quote(value)


def _quote(text: str) -> str:
    """A double-quoted value with quotes, backslashes and every unprintable character
    (C0 and C1 controls, line separators) escaped, so a line stays one line on a terminal."""
    if _PLAIN.fullmatch(text):  # the common case, once a request for most fields
        return f'"{text}"'
    quoted = json.dumps(text, ensure_ascii=False)
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in quoted)
