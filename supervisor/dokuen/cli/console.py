"""What every dokuenctl command shares: the ``Client`` (the socket, and how to print) that
``main`` puts on the click context, ``pass_client`` to get it, and the output helpers.

Printing: messages and tables always go through terminal.py (text from dokuend may hold
what an app wrote), and rich gets Text objects, never markup. Data that scripts read
(``logs``, ``config``, build output) is kept as it is when stdout is a pipe here, and made
safe on a terminal and over ssh: dokuenctl run by an ssh key cannot see the client's
terminal at the other end, so it always assumes one.
"""

import contextlib
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dokuen import client
from dokuen.cli.terminal import one_line, printable
from dokuen.errors import DokuenError, Refused
from dokuen.ssh.scope import KeyScope, check_request

if TYPE_CHECKING:
    from rich.console import Console


class Client:
    """What every command shares: the socket, and how to print."""

    def __init__(self, socket_path: Path, remote: KeyScope | None = None) -> None:
        """``remote``: the ssh key this dokuenctl runs for (ssh-serve), None when run here."""
        self.socket_path = socket_path
        self.remote = remote
        self.tty = sys.stdout.isatty()
        # Text an app controls is made safe on the way out: always over ssh (see above).
        self.terminal = self.tty or remote is not None
        self.warn = True  # print the daemon's warnings (a failed backup) on stderr

    @functools.cached_property
    def console(self) -> "Console":
        # rich only on a terminal, where its tables and colours show: imported on first
        # use, it costs nothing to scripts and pipes.
        from rich.console import Console  # noqa: PLC0415

        return Console(highlight=False)

    def call(
        self, command: str, on_output: Callable[[str], None] | None = None, **args: Any
    ) -> Any:
        """One request to dokuend; over ssh, only one the key may make (ssh/scope.py).

        Raises:
            Refused: the ssh key may not make it (logged by dokuend as refused).
        """
        self.check(command, args)
        return client.request(
            self.socket_path, command, args, on_output or self.write, self.on_warnings
        )

    def check(self, command: str, args: dict[str, Any]) -> None:
        """Over ssh, refuse (and have dokuend log) a request the key may not make."""
        if self.remote is not None:
            try:
                check_request(self.remote, command, args)
            except Refused as exc:
                self.audit_refusal(f"dokuenctl {command}", str(exc))
                raise

    def on_warnings(self, warnings: list[str]) -> None:
        """The daemon's warnings, made safe, unless this command keeps quiet about them."""
        (_warn_safely if self.warn else _ignore)(warnings)

    def audit_refusal(self, line: str, reason: str) -> None:
        """Have dokuend log what the ssh key asked for and why it was refused (the refusal
        matters more than its log line: a failure to log is ignored)."""
        if self.remote is None:
            return
        with contextlib.suppress(DokuenError):
            client.request(
                self.socket_path,
                "ssh:audit",
                {"key": self.remote.key, "line": line, "allowed": False, "reason": reason},
                _ignore_output,
                _ignore,
            )

    def refuse_over_ssh(self, command: str, message: str) -> None:
        """Raise Refused with ``message`` when this dokuenctl runs for an ssh key: for what
        would read or write a path of the server (or of the platform), which no key may."""
        if self.remote is not None:
            self.audit_refusal(f"dokuenctl {command}", message)
            raise Refused(message)

    def write(self, text: str) -> None:
        """Streamed data (build output, log lines, config values): as it is into a pipe,
        made safe for a terminal (and over ssh)."""
        write_out(printable(text) if self.terminal else text)

    def echo(self, text: str, err: bool = False) -> None:
        """A message that may quote what an app wrote: always made safe."""
        click.echo(printable(text), err=err)

    def table(self, headers: Sequence[str], rows: list[list[str]]) -> None:
        """Rows of text from dokuend: each cell on one line, no control characters, and on
        a terminal rich's markup in a cell is printed as typed, never obeyed."""
        rows = [[one_line(str(cell)) for cell in row] for row in rows]
        if self.tty:
            from rich.table import Table  # noqa: PLC0415
            from rich.text import Text  # noqa: PLC0415

            table = Table(*headers, box=None, header_style="bold", pad_edge=False)
            for row in rows:
                table.add_row(*(Text(cell) for cell in row))
            self.console.print(table)
            return
        widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
        for row in [list(headers), *rows]:
            click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


pass_client = click.make_pass_decorator(Client)


def _ignore(_warnings: list[str]) -> None:
    pass


def _ignore_output(_text: str) -> None:
    pass


def _warn_safely(warnings: list[str]) -> None:
    client.warn([printable(text) if isinstance(text, str) else text for text in warnings])


def write_out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def duration(seconds: float | None) -> str:
    """``42s``, ``3m07s``, ``5h02m``, ``2d04h``."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def size(count: int) -> str:
    """``512 B``, ``1.5 kB``, ``7.6 MB``, ``1.2 GB`` (powers of 1000, as PostgreSQL)."""
    amount = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            return f"{count} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    raise AssertionError  # the loop returns at GB
