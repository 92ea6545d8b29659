"""The pre-receive hook's program, kept light: it starts once per push while the pusher
waits, so it imports neither click nor rich nor the other commands (on a busy 2-core machine
they cost a push about 0.2 s), only the client, what a push does and the terminal filter.

    python -I -m dokuen.cli.githook --socket SOCKET    (the hook; git gives the ref updates)

``dokuenctl git-hook`` (the hooks written before this one) runs the same ``run``.
"""

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dokuen import client
from dokuen.cli.terminal import printable
from dokuen.errors import DokuenError, explain

Call = Callable[[str, dict[str, Any], Callable[[str], None]], Any]


def _stop_on_signal(signum: int, _frame: object) -> None:
    # SIGTERM/SIGHUP (the pusher went away) become an exit, so `finally` blocks clean up.
    sys.exit(128 + signum)


def write(text: str) -> None:
    # git shows the hook's output to the pusher, in a terminal as often as not: the build
    # output an app's code and buildpacks wrote is always made safe for one.
    sys.stdout.write(printable(text))
    sys.stdout.flush()


def run(call: Call) -> None:
    """Deploy what git says was pushed (stdin), in the repository git runs the hook in."""
    from dokuen.deploy.receive import receive  # noqa: PLC0415 (tarfile and co. only here)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    try:
        receive(Path.cwd(), sys.stdin.read(), call, write)
    except BrokenPipeError:
        # git went away mid-push. Not the usual exit 0 for a closed pipe: a hook that exits
        # 0 accepts the push.
        sys.exit(1)


def _warn(warnings: list[str]) -> None:
    client.warn([printable(text) if isinstance(text, str) else text for text in warnings])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "--socket" or not args[1].startswith("/"):
        print("usage: python -m dokuen.cli.githook --socket /ABSOLUTE/SOCKET", file=sys.stderr)
        return 2
    socket_path = Path(args[1])

    def call(command: str, request: dict[str, Any], on_output: Callable[[str], None]) -> Any:
        return client.request(socket_path, command, request, on_output, _warn)

    try:
        run(call)
    except DokuenError as exc:  # one line, as dokuenctl says it
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the push's deploy stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # a failed system call or a bug: one line, no traceback
        print(f"error: {printable(explain(exc))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
