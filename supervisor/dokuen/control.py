"""The control socket, dokuend's side: newline-delimited JSON between dokuenctl and dokuend
(the client's side is client.py).

A client sends one request line, ``{"command": "ps", "args": {...}}``, and reads lines back:
any number of ``{"output": TEXT}`` (streamed output: build steps, log lines), then exactly
one of ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": MESSAGE}`` (with
``"usage": true`` when the request itself was wrong: a bad name, count or argument, which
dokuenctl reports as a usage error). That last one also carries ``"warnings": [TEXT, ...]``
while something needs a person's attention (a scheduled backup failed): every dokuenctl
command prints them on stderr.

A request that attaches its requester (``run`` with ``"attach": true``) goes on both ways
until that last line. The client may send, one JSON object a line, after its request:
``{"stdin": BASE64}`` (bytes for the process's stdin), ``{"eof": true}`` (its stdin ended)
and ``{"resize": [ROWS, COLS]}`` (its terminal's new size); the daemon sends the process's
output as ``{"data": BASE64}`` (bytes as written: a terminal's escape sequences and any
binary survive, where ``output`` text would be lossy). The client hanging up (end of file
on the socket) ends such a request: the process group is killed. Older clients, which send
no ``attach``, get ``output`` lines as before and nothing is read from them.
"""

import asyncio
import contextlib
import errno
import grp
import json
import os
import pwd
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from dokuen.errors import DokuenError, InvalidName, ProtocolError, explain, leaf
from dokuen.events import get_logger

log = get_logger()
Command = Callable[[dict[str, Any], "Output"], Awaitable[Any]]


async def cancel_when(event: Callable[[], Awaitable[None]], scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` once ``event`` returns (``Output.wait_closed``: the requester left)."""
    await event()
    scope.cancel()


def text_arg(args: dict[str, Any], key: str) -> str:
    """A request's string argument; ProtocolError when it is missing or not a string."""
    value = args.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"argument {key!r} must be a string")
    return value


def optional_arg(args: dict[str, Any], key: str) -> str | None:
    """A request's optional string argument (None when absent)."""
    return None if args.get(key) is None else text_arg(args, key)


MAX_REQUEST = 1 << 20
IDLE_TIMEOUT = 60.0  # a client that sends no whole request line in this long is dropped
# The listening socket's descriptor, handed to the next image by a re-exec. Not DOKUEN_*:
# it is no setting (an unknown DOKUEN_ setting is an error at start).
INHERITED_FD = "DOKUEND_CONTROL_FD"
# Out of descriptors or memory, accept() fails while the connection waits in the backlog:
# wait a little (the idle timeout frees descriptors) instead of spinning or dying.
_ACCEPT_RETRY = 0.1
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Output:
    """Streams ``{"output": ...}`` lines to one client, and reads what an attached client
    sends after its request (``messages``)."""

    def __init__(
        self, stream: anyio.abc.ByteStream, received: BufferedByteReceiveStream | None = None
    ) -> None:
        self._stream = stream
        # What was read with the request line: an attached client's next lines may be in it.
        self._received = received or BufferedByteReceiveStream(stream)

    async def write(self, text: str) -> None:
        await _send(self._stream, {"output": text})

    async def send(self, message: dict[str, Any]) -> None:
        """Any other line to the client (``{"data": BASE64}``)."""
        await _send(self._stream, message)

    async def wait_closed(self) -> None:
        """Return when the client hangs up (it sends nothing after its request)."""
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            while await self._received.receive():
                pass

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """The JSON objects the client sends after its request, until it hangs up.

        Raises:
            ProtocolError: a line that is not a JSON object, or longer than MAX_REQUEST.
        """
        while True:
            try:
                line = await self._received.receive_until(b"\n", MAX_REQUEST)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
                return
            except anyio.DelimiterNotFound:
                raise ProtocolError(f"a message is longer than {MAX_REQUEST} bytes") from None
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if not isinstance(message, dict):
                raise ProtocolError("a message after the request must be one JSON object")
            yield message


Handler = Callable[[str, dict[str, Any], Output], Awaitable[Any]]
Warnings = Callable[[], list[str]]


async def _send(stream: anyio.abc.ByteSendStream, message: dict[str, Any]) -> None:
    await stream.send(json.dumps(message).encode() + b"\n")


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """Decode one request line; raise ProtocolError for anything but a command object."""
    try:
        message = json.loads(line)
    except ValueError:
        raise ProtocolError("request is not valid JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("command"), str):
        raise ProtocolError('request must be an object like {"command": "ps", "args": {}}')
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("request 'args' must be an object")
    return message["command"], args


def peer_allowed(uid: int, socket_path: Path) -> bool:
    """Root, our own user, or a member of the socket's group may talk to the daemon."""
    if uid in (0, os.geteuid()):
        return True
    try:
        group = os.stat(socket_path).st_gid
        user = pwd.getpwuid(uid)
        return group in os.getgrouplist(user.pw_name, user.pw_gid)
    except (KeyError, OSError):
        return False


def _peer_uid(raw: socket.socket) -> int | None:
    if not hasattr(socket, "SO_PEERCRED"):  # not Linux: the socket's file mode guards it
        return None
    creds = raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def prepare_socket_path(path: Path) -> None:
    """Remove a stale socket file; refuse when another dokuend answers on it."""
    if not path.exists() and not path.is_symlink():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
    else:
        raise DokuenError(f"another dokuend is already running on {path}")
    finally:
        probe.close()


def on_first_use(
    names: Iterable[str], make: Callable[[], Mapping[str, Command]]
) -> dict[str, Command]:
    """Handlers for ``names`` whose module is imported, and whose handlers are made, by
    the first request for any of them (``make``): the daemon starts without what only a
    rare request needs."""
    made: list[Mapping[str, Command]] = []

    def handler(name: str) -> Command:
        async def first_use(args: dict[str, Any], out: "Output") -> Any:
            if not made:
                made.append(make())
            return await made[0][name](args, out)

        return first_use

    return {name: handler(name) for name in names}


def unix_listener(path: Path) -> socket.socket:
    """A listening socket bound at ``path``. Made here rather than by anyio's
    ``create_unix_listener``, whose module imports ``ssl`` (libssl and libcrypto, 4 MiB
    resident for the daemon's life: supervise/readiness.py)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


_handed_over: list[int] = []  # the descriptor seal_inherited took, for serve


def seal_inherited() -> None:
    """First thing at start, before anything is spawned: the control socket an earlier
    image handed over (``INHERITED_FD``) is made close-on-exec and its variable taken out
    of the environment, so no child (an app, nginx, PostgreSQL) ever holds it."""
    text = os.environ.pop(INHERITED_FD, "")
    if text.isdigit():
        with contextlib.suppress(OSError):
            os.set_inheritable(int(text), False)
            _handed_over.append(int(text))


def inherited_listener(path: Path) -> socket.socket | None:
    """The listening socket an earlier image of this dokuend handed over across its re-exec,
    when it is one listening on ``path``."""
    if not _handed_over:
        return None
    try:
        sock = socket.socket(fileno=_handed_over.pop())
    except OSError:
        return None
    try:
        if sock.family == socket.AF_UNIX and sock.getsockname() == str(path.absolute()):
            return sock
    except OSError:
        pass
    sock.close()
    return None


async def serve(
    path: Path,
    handler: Handler,
    *,
    group: str | None = None,
    warnings: Warnings = list,
    idle_timeout: float = IDLE_TIMEOUT,
    listening: Callable[[socket.socket], None] = lambda _sock: None,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``path`` (mode 0600, or 0660 when ``group`` names its group) until cancelled;
    ``warnings`` gives what every reply warns about. A client that sends no request line
    within ``idle_timeout`` seconds is dropped; one that is being answered (a deploy, a
    ``logs -f``) never is. ``listening`` is told the socket (a re-exec hands it over:
    clients that connect meanwhile wait in its backlog)."""
    old_umask = os.umask(0o177)  # no window in which the socket is open to others
    try:
        listener = inherited_listener(path)
        if listener is None:
            prepare_socket_path(path)
            listener = unix_listener(path)
        listener.setblocking(False)
    except OSError as exc:
        raise DokuenError(
            f"cannot listen on {path}: {explain(exc)} (set DOKUEN_SOCKET to a path in a "
            "directory dokuend can write)"
        ) from None
    finally:
        os.umask(old_umask)
    listening(listener)
    if group is not None:
        with contextlib.suppress(KeyError, PermissionError):
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
            path.chmod(0o660)

    async def session(stream: anyio.abc.SocketStream, uid: int | None) -> None:
        async with stream:
            await _session(stream, uid, path, handler, warnings, idle_timeout)

    try:
        with listener:
            async with anyio.create_task_group() as sessions:
                task_status.started()
                while True:
                    client = await _accept(listener)
                    if client is not None:
                        sessions.start_soon(session, *client)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


async def _accept(listener: socket.socket) -> tuple[anyio.abc.SocketStream, int | None] | None:
    """The next client and its uid, or None: when the system is out of descriptors (after a
    pause) or the client left before it was accepted. Accepted here, on the socket dokuend
    made, rather than by anyio's listener, whose socket attributes import anyio's sockets
    module, and with it ``ssl`` (libssl and libcrypto: cli/lazylibs.py)."""
    try:
        client, _ = await asyncio.get_running_loop().sock_accept(listener)
    except OSError as exc:
        if exc.errno not in _OUT_OF_RESOURCES:
            raise
        log.error("control.accept_failed", error=explain(exc))
        await anyio.sleep(_ACCEPT_RETRY)
        return None
    try:
        uid = _peer_uid(client)
        return await anyio.abc.UNIXSocketStream.from_socket(client), uid
    except (OSError, ValueError):  # gone already: from_socket asks for its peer
        client.close()
        return None
    except BaseException:
        client.close()
        raise


async def _session(
    stream: anyio.abc.SocketStream,
    uid: int | None,
    path: Path,
    handler: Handler,
    warnings: Warnings,
    idle_timeout: float = IDLE_TIMEOUT,
) -> None:
    try:
        # The request is read before the peer is checked, so that even a refused client
        # gets its answer instead of a broken pipe.
        line = b""
        received = BufferedByteReceiveStream(stream)
        with anyio.move_on_after(idle_timeout) as idle:
            line = await received.receive_until(b"\n", MAX_REQUEST)
        if idle.cancelled_caught:
            log.info("control.idle_dropped", after=idle_timeout)
            return
        if uid is not None and not peer_allowed(uid, path):
            log.warning("control.refused", uid=uid)
            raise DokuenError(f"user {uid} may not control this dokuend")
        command, args = parse_request(line)
        reply = {"ok": True, "result": await handler(command, args, Output(stream, received))}
    except Exception as exc:  # an ExceptionGroup from a task group too: its one cause
        cause = leaf(exc)
        if isinstance(cause, (anyio.IncompleteRead, anyio.DelimiterNotFound)):
            cause = ProtocolError("request must be one line of JSON")
        elif isinstance(
            cause, (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream)
        ):
            return  # the client went away (dokuenctl logs -f ended with ^C)
        # A bug or a failed write (a full disk) in one request must not stop the daemon and
        # every app with it: the requester and the log hear of it in one line.
        reply = {"ok": False, "error": explain(cause)}
        if isinstance(cause, InvalidName):  # a usage error: dokuenctl exits 2 for it
            reply["usage"] = True
        if not isinstance(cause, DokuenError):
            log.error("control.request_failed", error=reply["error"])
            log.debug("control.request_failed_traceback", exc_info=exc)
    if notes := warnings():
        reply["warnings"] = notes
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await _send(stream, reply)
