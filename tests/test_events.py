"""The daemon's event lines (events.py) as an app's words would try them: a value with
quotes, newlines, NUL, U+2028 or a lone surrogate stays inside its own JSON line and
cannot set the event, level or timestamp; on a terminal it cannot start a line either;
a value JSON cannot say never makes the caller fail; a traceback leaves out locals."""

import io
import json

import pytest

from dokuen.events import EventLog

FORGED = 'x"}\n{"event": "forged", "level": "error"}\r\u2028\x00\udcff'


def event_log(as_json: bool) -> tuple[EventLog, io.StringIO]:
    out = io.StringIO()
    log = EventLog()
    log.writer, log.as_json = out, as_json
    return log, out


def test_an_app_value_stays_in_its_own_json_line() -> None:
    log, out = event_log(as_json=True)
    log.info("process.exited", app=FORGED, level="error", timestamp="0")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["app"] == FORGED
    assert (record["event"], record["level"]) == ("process.exited", "info")
    assert record["timestamp"] != "0"


def test_on_a_terminal_an_app_value_cannot_start_a_line() -> None:
    log, out = event_log(as_json=False)
    log.warning("pipe.read_failed", error="boom\n2026-12-06T00:00:00Z [error  ] forged")
    assert len(out.getvalue().splitlines()) == 1
    assert "\\n2026" in out.getvalue()


@pytest.mark.parametrize("as_json", [True, False])
def test_a_value_json_cannot_say_does_not_fail_the_caller(as_json: bool) -> None:
    log, out = event_log(as_json)
    cycle: list[object] = []
    cycle.append(cycle)
    log.info("odd", keys={(1, 2): 3}, cycle=cycle)
    log.info("next")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    if as_json:
        assert json.loads(lines[0])["keys"] == "{(1, 2): 3}"
        assert json.loads(lines[1])["event"] == "next"


def test_a_traceback_leaves_out_the_secret_in_its_locals() -> None:
    log, out = event_log(as_json=True)

    def dump(password: str) -> None:
        raise RuntimeError("pg_dump failed")

    try:
        dump("-".join(("hunter2", "secret")))  # the source line does not hold it
    except RuntimeError:
        log.exception("backup.failed", app="blog")
    record = json.loads(out.getvalue())
    assert "pg_dump failed" in record["exception"]
    assert "hunter2-secret" not in out.getvalue()
