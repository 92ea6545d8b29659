"""The daemon's own events, structured: ``log.info("process.exited", app="blog", code=1)``.

Off a terminal each event is one JSON object a line (``{"app": "blog", "code": 1, "event":
"process.exited", "level": "info", "timestamp": "2026-12-06T16:54:38.123456Z"}``: the
fields, then the event, its level and a UTC timestamp, as structlog wrote them before this
replaced it, for 1.8 MiB less resident memory in the daemon); on a terminal, a readable
line. Debug events are written only when asked for (``dokuend -v``). An exception (given as
``exc_info=``, or the one being handled, with ``log.exception``) adds its traceback, without
local variables: they hold secrets (an app's config, the PGPASSWORD given to pg_dump).
Child output is not logged here: it is data, and goes through the log multiplexer.
"""

import datetime
import json
import sys
import traceback
from typing import Any, Protocol

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Writer(Protocol):
    """Where events go: anything with ``write(text)`` (dokuend's is file descriptor 2)."""

    def write(self, text: str, /) -> Any: ...


class EventLog:
    """Writes events at or above ``threshold``; what :func:`configure` sets is shared by
    every module's ``log``."""

    def __init__(self) -> None:
        self.writer: Writer | None = None  # None: sys.stderr as it is when an event comes
        self.threshold = LEVELS["debug"]
        self.as_json = False

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """An error with the exception being handled."""
        fields.setdefault("exc_info", sys.exc_info()[1])
        self._emit("error", event, fields)

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if LEVELS[level] < self.threshold:
            return
        error = fields.pop("exc_info", None)
        stamp = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        record = {**fields, "event": event, "level": level, "timestamp": stamp}
        if isinstance(error, BaseException):
            record["exception"] = "".join(traceback.format_exception(error)).rstrip()
        line = render_json(record) if self.as_json else render_text(record)
        (self.writer or sys.stderr).write(line + "\n")


def render_json(record: dict[str, Any]) -> str:
    """One line of JSON; what JSON cannot say (a Path, an exception) as its ``repr``; a
    value it cannot say even so (a dict with tuple keys, a cycle) as its ``repr`` too:
    an event is never what fails its caller."""
    try:
        return json.dumps(record, default=repr)
    except (TypeError, ValueError):
        return json.dumps({k: v if isinstance(v, str) else repr(v) for k, v in record.items()})


def render_text(record: dict[str, Any]) -> str:
    """``2026-12-06T16:54:38Z [info   ] process.exited  app=blog code=1``, for a terminal."""
    fields = {k: v for k, v in record.items() if k not in ("event", "level", "timestamp")}
    error = fields.pop("exception", None)
    # A value with a newline or another control character (an app's words) is quoted, so
    # it cannot start a line that looks like an event of its own.
    text = " ".join(
        f"{k}={v if isinstance(v, str) and v.isprintable() else repr(v)}" for k, v in fields.items()
    )
    line = f"{record['timestamp']} [{record['level']:<7}] {record['event']:<24} {text}".rstrip()
    return f"{line}\n{error}" if error else line


_LOG = EventLog()


def get_logger() -> EventLog:
    """The daemon's event log (one for every module)."""
    return _LOG


def configure(writer: Writer, *, verbose: bool, as_json: bool) -> None:
    """Send every event to ``writer``, JSON or text; debug events only when ``verbose``."""
    _LOG.writer = writer
    _LOG.threshold = LEVELS["debug" if verbose else "info"]
    _LOG.as_json = as_json
