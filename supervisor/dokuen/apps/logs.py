"""The ``logs`` request: the last lines of the unified log that a filter wants, then (with
``follow``) every new one, until the client leaves."""

import os
from typing import Any

import anyio

from dokuen.control import Output, cancel_when, text_arg
from dokuen.errors import ProtocolError
from dokuen.names import parse_process_name
from dokuen.supervise.logmux import SOURCES, LogFilter, LogMux, tail


async def stream_logs(mux: LogMux, app: str | None, args: dict[str, Any], out: Output) -> None:
    """Send ``out`` the lines of ``app`` (None: every app) that ``args`` ask for: ``ps``,
    ``source``, ``lines`` (how many of the past) and ``follow``.

    Raises:
        ProtocolError: an argument of the wrong kind.
    """
    process_type, index = None, None
    if args.get("ps"):
        process_type, index = parse_process_name(text_arg(args, "ps"))
    count = args.get("lines", 100)
    if not isinstance(count, int) or count < 0:
        raise ProtocolError("argument 'lines' must be a whole number")
    source = args.get("source")
    if source is not None and source not in SOURCES:
        raise ProtocolError(f"argument 'source' must be one of {', '.join(SOURCES)}")
    wanted = LogFilter(app, process_type, index, source)
    follower, fd, end = mux.follow(wanted, count)
    try:
        try:
            older = await anyio.to_thread.run_sync(tail, fd, end, count, wanted)
        finally:
            os.close(fd)
        # Split on newlines only: a bare "\r" (a progress bar) is part of its line.
        recent = (older + follower.backlog).split(b"\n")[:-1][-count:] if count else []
        await out.write("".join(line.decode(errors="replace") + "\n" for line in recent))
        if args.get("follow"):
            async with anyio.create_task_group() as tg:
                # A client that leaves is noticed at once, not at the next line it
                # wanted (which, for a quiet app, may never come).
                tg.start_soon(cancel_when, out.wait_closed, tg.cancel_scope)
                async for batch in follower:
                    await out.write(batch.decode(errors="replace"))
                if follower.dropped:
                    await out.write(
                        "dokuen: this reader fell too far behind and was dropped; "
                        "run 'dokuenctl logs -f' again\n"
                    )
                tg.cancel_scope.cancel()
    finally:
        mux.unfollow(follower)
