"""The control socket, dokuenctl's side: one blocking request and its streamed answer.

Kept to the standard library so that dokuenctl starts fast (see control.py for the
protocol).
"""

import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dokuen.errors import DaemonUnavailable, DokuenError, InvalidName


def request(
    path: Path,
    command: str,
    args: dict[str, Any],
    on_output: Callable[[str], None],
    on_warnings: Callable[[list[str]], None] | None = None,
) -> Any:
    """Send one request (blocking, for dokuenctl); pass streamed output to ``on_output``.

    Returns the result; raises DokuenError with the daemon's message when it failed, and
    DaemonUnavailable when nothing answers on ``path``. The daemon's warnings (a failed
    scheduled backup) go to ``on_warnings``, by default to stderr, each once per process.
    """
    for message in _exchange(path, {"command": command, "args": args}):
        if "output" in message:
            on_output(message["output"])
            continue
        return reply_result(message, on_warnings or warn)
    raise DokuenError("dokuend closed the connection without an answer (see its log)")


_warned: set[str] = set()


def warn(warnings: list[str]) -> None:
    """Print each of the daemon's warnings on stderr, once per process (a command that
    makes several requests says it once)."""
    for text in warnings:
        if isinstance(text, str) and text not in _warned:
            _warned.add(text)
            sys.stderr.write(f"warning: {text}\n")
            sys.stderr.flush()


def connect(path: Path) -> socket.socket:
    """A connection to dokuend; DaemonUnavailable (saying what to do) when there is none."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        client.close()
        raise DaemonUnavailable(
            f"dokuend is not running (no answer on {path}); start it with: dokuend"
            + ("" if "DOKUEN_HOME" in os.environ else " --home DIR")
        ) from None
    except PermissionError:
        client.close()
        raise DaemonUnavailable(
            f"permission denied on {path} (run as the dokuend user, root, or a member of "
            "the socket's group)"
        ) from None
    return client


def reply_result(message: dict[str, Any], on_warnings: Callable[[list[str]], None]) -> Any:
    """The result of a request's last line; DokuenError with the daemon's message."""
    on_warnings(message.get("warnings") or [])
    if message.get("ok"):
        return message.get("result")
    kind = InvalidName if message.get("usage") is True else DokuenError
    raise kind(str(message.get("error", "unknown error")))


def _exchange(path: Path, message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    client = connect(path)
    with client, client.makefile("rb") as replies:
        # Socket errors become DokuenError here, so that a broken pipe on our own stdout
        # (`dokuenctl logs | head`) is never mistaken for the daemon going away.
        try:
            client.sendall(json.dumps(message).encode() + b"\n")
        except OSError as exc:
            raise DaemonUnavailable(f"lost the connection to dokuend ({exc})") from None
        while True:
            try:
                line = replies.readline()
            except OSError as exc:
                raise DaemonUnavailable(f"lost the connection to dokuend ({exc})") from None
            if not line:
                return
            yield json.loads(line)
