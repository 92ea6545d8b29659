"""What every dokuenctl command shares: the ``Client`` (the socket, and how to print) that
``main`` puts on the click context, ``pass_client`` to get it, and the output helpers."""

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dokuen import client

if TYPE_CHECKING:
    from rich.console import Console


class Client:
    """What every command shares: the socket, and how to print."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.tty = sys.stdout.isatty()
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
        on_warnings = None if self.warn else _ignore
        return client.request(self.socket_path, command, args, on_output or write_out, on_warnings)

    def table(self, headers: Sequence[str], rows: list[list[str]]) -> None:
        if self.tty:
            from rich.table import Table  # noqa: PLC0415

            table = Table(*headers, box=None, header_style="bold", pad_edge=False)
            for row in rows:
                table.add_row(*row)
            self.console.print(table)
            return
        widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
        for row in [list(headers), *rows]:
            click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


pass_client = click.make_pass_decorator(Client)


def _ignore(_warnings: list[str]) -> None:
    pass


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
