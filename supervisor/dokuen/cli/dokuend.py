"""``dokuend``: run the daemon in the foreground.

Kept free of the client's libraries so the daemon stays light.
"""

import sys

# structlog renders with rich when it can import it; the daemon logs JSON or plain text and
# does not need it, and leaving it out saves about 4 MiB of resident memory. A None entry in
# sys.modules makes `import rich` raise ImportError, which structlog handles.
sys.modules.setdefault("rich", None)  # type: ignore[arg-type]

import logging
import os
from pathlib import Path

import anyio
import click
import structlog

from dokuen import __version__
from dokuen.daemon import Daemon
from dokuen.errors import DokuenError
from dokuen.service.manager import ServiceManager
from dokuen.settings import load_settings


def configure_logging(verbose: bool) -> None:
    """structlog to stderr: readable on a terminal, JSON lines otherwise."""
    renderers: list[structlog.types.Processor] = (
        [structlog.dev.ConsoleRenderer()]
        if sys.stderr.isatty()
        else [
            # No local variables in tracebacks: they hold secrets (an app's config, the
            # PGPASSWORD given to pg_dump), and this log is not a place for them.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(),
        ]
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    help="State directory (default: $DOKUEN_HOME, /var/lib/dokuen as root, "
    "else ~/.local/share/dokuen).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug events too.")
@click.version_option(__version__, prog_name="dokuend")
def main(home: Path | None, verbose: bool) -> None:
    """Run dokuend, the Dokuen daemon, in the foreground until SIGTERM or SIGINT."""
    configure_logging(verbose)
    try:
        # First: it takes NOTIFY_SOCKET and the like out of os.environ, before anything
        # (the daemon's copy of its environment, a child) can see them.
        service = ServiceManager.from_environ(os.environ)
        settings = load_settings(os.environ, home)
        daemon = Daemon(settings, service=service)
        anyio.run(daemon.run, backend="asyncio", backend_options={"use_uvloop": True})
    except DokuenError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
