"""Router lines, the pure half: what nginx logs for each request and how one of its
datagrams becomes a Heroku router line (``at=info method=GET path="/" ... status=200``).

nginx writes one JSON object per request (``log_format ... escape=json``) as a syslog
datagram to dokuend's router socket; ``parse_datagram`` turns one datagram into the app's
name and the line, or refuses it with ValueError. The I/O half is listener.py.
"""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from dokuen.supervise.logmux import ROUTER_SOURCE

LOG_FORMAT_NAME = "dokuen_router"
# Relative to nginx's working directory, which is its prefix ($DOKUEN_HOME/nginx): the
# workers (nobody, when the master is root) may not search the directories above it.
SOCKET_NAME = "router.sock"
SOURCE = ROUTER_SOURCE  # APP[router]: in the unified log
# `path` comes last: a request line too long for one syslog datagram (nginx cuts at about
# 4 KiB) loses the end of its path, and everything before it still parses.
FIELDS = (
    ("app", "$dokuen_app"),
    ("state", "$dokuen_state"),
    ("method", "$request_method"),
    ("host", "$host"),
    ("id", "$request_id"),
    ("fwd", "$remote_addr"),
    ("upstream", "$upstream_addr"),
    ("header", "$upstream_header_time"),
    ("connect", "$upstream_connect_time"),
    ("service", "$upstream_response_time"),
    ("time", "$request_time"),
    ("status", "$status"),
    ("bytes", "$bytes_sent"),
    ("scheme", "$scheme"),
    ("path", "$request_uri"),
)
TRUNCATED = "[cut]"
_PATH_KEY = ',"path":"'
_HOST = re.compile(r"[a-z0-9.-]{1,253}(?::[0-9]{1,5})?")
_ADDRESS = re.compile(r"127\.0\.0\.1:([0-9]{1,5})")
_METHOD = re.compile(r"[A-Z]{1,20}")
_TOKEN = re.compile(r"[A-Za-z0-9._-]{0,64}")
# Printable ASCII but the quote and the backslash: quoted as is (json.dumps would agree).
_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


def render_log_format() -> str:
    """The ``log_format`` directive nginx's http block needs (one JSON object a request)."""
    body = ",".join(f'"{key}":"{variable}"' for key, variable in FIELDS)
    return f"    log_format {LOG_FORMAT_NAME} escape=json '{{{body}}}';\n"


def render_access_log() -> str:
    """The ``access_log`` directive of an app's server block."""
    target = f"syslog:server=unix:{SOCKET_NAME},nohostname,tag=dokuen"
    return f"    access_log {target} {LOG_FORMAT_NAME};\n"


@dataclass(frozen=True)
class RouterLine:
    """One request as the unified log shows it."""

    app: str
    line: str
    dyno: str | None = None


def parse_datagram(data: bytes, dynos: Mapping[int, tuple[str, str]]) -> RouterLine:
    """The router line for one syslog datagram from nginx.

    ``dynos`` maps a web process's port to its app and name (``("blog", "web.1")``).
    Raises ValueError when the datagram is not one of our log format's lines.
    """
    head, separator, body = data.partition(b": ")
    if not separator or not head.startswith(b"<") or not head.endswith(b" dokuen"):
        raise ValueError("not a syslog message tagged dokuen")
    fields = _fields(body.decode("utf-8", errors="replace"))
    app = fields.get("app", "")
    if not re.fullmatch(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?", app):
        raise ValueError(f"no app name in the message ({app[:70]!r})")
    upstream = fields.get("upstream", "").rpartition(", ")[2]
    dyno = None
    if match := _ADDRESS.fullmatch(upstream):
        owner = dynos.get(int(match[1]))
        dyno = owner[1] if owner is not None and owner[0] == app else None
    return RouterLine(app, " ".join(_words(fields, dyno)), dyno)


def _fields(text: str) -> dict[str, str]:
    try:
        fields = json.loads(text)
    except ValueError:
        # Cut by nginx's datagram limit: the path (last) lost its end. Keep what arrived.
        start = text.rfind(_PATH_KEY)
        if start < 0:
            raise ValueError("the message is not JSON") from None
        fields = json.loads(text[:start] + "}")
        if isinstance(fields, dict):
            fields["path"] = _cut_string(text[start + len(_PATH_KEY) :]) + TRUNCATED
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise ValueError("the message is not a JSON object of strings")
    return fields


def _cut_string(escaped: str) -> str:
    """The text of a JSON string body cut anywhere, even inside an escape (``\\u00``)."""
    for end in range(len(escaped), max(len(escaped) - 6, 0) - 1, -1):
        try:
            return str(json.loads(f'"{escaped[:end]}"'))
        except ValueError:
            continue
    raise ValueError("the message's path is not a JSON string")


def _words(fields: Mapping[str, str], dyno: str | None) -> list[str]:
    status = fields.get("status", "")
    words = list(_outcome(fields, status))
    method = fields.get("method", "")
    host = fields.get("host", "")
    words += [
        f"method={method if _METHOD.fullmatch(method) else _quote(method)}",
        f"path={_quote(fields.get('path', ''))}",
        # nginx refuses hosts that are not names, but say so rather than trust it.
        f"host={host if _HOST.fullmatch(host) else _quote(host)}",
        f"request_id={_token(fields.get('id', ''))}",
        f"fwd={_quote(fields.get('fwd', ''))}",
    ]
    contacted = bool(fields.get("upstream"))
    words += [
        f"dyno={dyno or ''}",
        f"connect={_milliseconds(fields.get('connect', '')) if contacted else ''}",
        f"service={_milliseconds(fields.get('service', '')) if contacted else ''}",
        f"status={_token(status)}",
        f"bytes={_token(fields.get('bytes', ''))}",
        f"protocol={_token(fields.get('scheme', ''))}",
    ]
    return words


def _outcome(fields: Mapping[str, str], status: str) -> tuple[str, ...]:
    """``at=info``, or Heroku's code and description where nginx itself answered."""
    state = fields.get("state")
    if state == "maintenance" and status == "503":
        return ("at=info", "code=H80", 'desc="Maintenance mode"')
    if state == "idle" and status == "503":
        return ("at=error", "code=H14", 'desc="No web processes running"')
    if status == "499":
        return ("sock=client", "at=warning", "code=H27", 'desc="Client Request Interrupted"')
    # No response header from any web process: the 502 or 504 is nginx's, not the app's.
    answered = fields.get("header", "-").rpartition(", ")[2] not in ("-", "")
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


def _token(text: str) -> str:
    return text if _TOKEN.fullmatch(text) else _quote(text)


def _quote(text: str) -> str:
    """A double-quoted value with quotes, backslashes and every unprintable character
    (C0 and C1 controls, line separators) escaped, so a line stays one line on a terminal."""
    if _PLAIN.fullmatch(text):  # the common case, once a request for most fields
        return f'"{text}"'
    quoted = json.dumps(text, ensure_ascii=False)
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in quoted)
