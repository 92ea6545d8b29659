"""``dokuend``: run the daemon in the foreground.

Kept free of the client's libraries so the daemon stays light: its four options are read
here (``parse_args``) rather than by click, which would stay in the daemon's memory for its
whole life (1 MiB of 30); dokuenctl, a short-lived command, uses click.
"""

import sys

# Before anything imports them: ssl (libssl and libcrypto, 4 MiB) loads on first use, bz2
# and lzma (0.4 MiB) when an archive needs them (cli/lazylibs.py).
from dokuen.cli.lazylibs import import_shutil_alone, import_without_ssl

import_without_ssl()
import_shutil_alone()

import contextlib
import importlib.util
import os
import resource
from dataclasses import dataclass
from pathlib import Path

import anyio

from dokuen import __version__
from dokuen.control import seal_inherited
from dokuen.daemon import Daemon
from dokuen.errors import DokuenError, explain, leaf
from dokuen.events import configure, get_logger
from dokuen.homelock import lock_home
from dokuen.service.manager import ServiceManager
from dokuen.settings import load_settings

log = get_logger()


class Stderr:
    """Where the daemon's own log goes: file descriptor 2, written whole-line by whole-line.
    A closed or broken stderr (a journal that went away, a pipe whose reader exited) loses
    the lines and never stops the daemon."""

    def write(self, text: str) -> int:
        data = text.encode(errors="replace")
        with contextlib.suppress(OSError):
            while data:
                data = data[os.write(2, data) :]
        return len(text)

    def flush(self) -> None:
        pass


def keep_standard_descriptors() -> None:
    """Open /dev/null on any of 0, 1 and 2 that was closed, so that no file dokuend opens
    later (a log, the lock) lands on one and is written to as if it were stderr."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def raise_open_files_limit() -> None:
    """Raise RLIMIT_NOFILE's soft limit to the hard one: every app process costs dokuend a
    pipe, every client a socket, and the usual soft limit of 1024 runs out first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard
    if hard == resource.RLIM_INFINITY:  # above fs.nr_open, setrlimit refuses it
        nr_open = Path("/proc/sys/fs/nr_open")
        wanted = int(nr_open.read_text()) if nr_open.exists() else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("daemon.nofile_limit", soft=soft, hard=hard, error=str(exc))


def fail(message: str) -> None:
    """Say ``error: MESSAGE`` on stderr, if anyone still reads it."""
    Stderr().write(f"error: {message}\n")


def configure_logging(verbose: bool) -> None:
    """The daemon's events to stderr: readable on a terminal, JSON lines otherwise."""
    configure(Stderr(), verbose=verbose, as_json=not os.isatty(2))


USAGE = """Usage: dokuend [OPTIONS]

  Run dokuend, the Dokuen daemon, in the foreground until SIGTERM or SIGINT.

Options:
  --home DIRECTORY  State directory (default: $DOKUEN_HOME, /var/lib/dokuen as
                    root, else ~/.local/share/dokuen).
  -v, --verbose     Log debug events too.
  --version         Show the version and exit.
  -h, --help        Show this message and exit.
"""


@dataclass(frozen=True)
class Options:
    """What dokuend's command line asks for."""

    home: Path | None = None
    verbose: bool = False
    show: str | None = None  # "help" or "version": print it and exit


class UsageError(Exception):
    """A command line dokuend does not take; the message names the option."""


def parse_args(argv: list[str]) -> Options:
    """dokuend's options (``--home DIR`` or ``--home=DIR``, ``-v``/``--verbose``,
    ``--version``, ``-h``/``--help``); the first of help and version wins, as with click.

    Raises:
        UsageError: an unknown option or argument, ``--home`` without a directory.
    """
    home: Path | None = None
    verbose = False
    args = iter(argv)
    for arg in args:
        name, equals, value = arg.partition("=")
        if name == "--home":
            if not equals:
                value = next(args, "")
            if not value:
                raise UsageError("option '--home' requires a directory")
            home = Path(value)
        elif equals:
            raise UsageError(f"option {name!r} does not take a value")
        elif arg in ("-v", "--verbose"):
            verbose = True
        elif arg in ("-h", "--help"):
            return Options(show="help")
        elif arg == "--version":
            return Options(show="version")
        elif arg.startswith("-"):
            raise UsageError(f"no such option: {arg!r}")
        else:
            raise UsageError(f"unexpected argument {arg!r}")
    if home is not None and home.exists() and not home.is_dir():
        raise UsageError(f"--home: {str(home)!r} is a file, not a directory")
    return Options(home, verbose)


# What the daemon imports only when a request needs it (tests/test_imports.py): looked for
# (not imported) at start and by `--version`, which a re-exec runs first, so a broken
# installation fails there, not at the first certificate, backup or `.env`.
LAZY = ("yaml", "croniter", "boto3", "psycopg", "cryptography", "acme", "requests", "dotenv")


def missing_libraries() -> list[str]:
    """The lazily imported libraries that cannot be found (a broken installation)."""
    missing = []
    for name in LAZY:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: kept out of sys.modules (None)
            found = False
        if not found:
            missing.append(name)
    return missing


def main(argv: list[str] | None = None) -> None:
    """The ``dokuend`` program: exit status 0, 1 (the daemon failed: one line says why) or
    2 (a bad command line)."""
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        fail(f"{exc} (dokuend --help lists the options)")
        sys.exit(2)
    if options.show == "help":
        sys.stdout.write(USAGE)
        return
    if missing := missing_libraries():
        fail(
            f"dokuend's installation lacks {', '.join(missing)}: reinstall dokuen with its "
            "dependencies (bin/setup, or pip install --force-reinstall dokuen)"
        )
        sys.exit(1)
    if options.show == "version":
        sys.stdout.write(f"dokuend, version {__version__}\n")
    else:
        run(options.home, options.verbose)


def run(home: Path | None, verbose: bool) -> None:
    """Run dokuend, the Dokuen daemon, in the foreground until SIGTERM or SIGINT."""
    seal_inherited()  # a re-exec's control socket: no child may inherit it
    keep_standard_descriptors()
    configure_logging(verbose)
    try:
        # First: it takes NOTIFY_SOCKET and the like out of os.environ, before anything
        # (the daemon's copy of its environment, a child) can see them.
        service = ServiceManager.from_environ(os.environ)
        settings = load_settings(os.environ, home)
        # Before anything touches the home: a second dokuend must change nothing.
        lock = lock_home(settings.home)
        raise_open_files_limit()
        daemon = Daemon(settings, service=service)
        anyio.run(daemon.run, backend="asyncio")  # asyncio's own loop: uvloop is 2.2 MiB more
        os.close(lock)
    except Exception as exc:  # an ExceptionGroup from a task group too: one line, no traceback
        message = explain(exc)
        if not isinstance(leaf(exc), DokuenError):  # a bug or a failed system call
            log.error("daemon.failed", error=message)
            log.debug("daemon.failed_traceback", exc_info=exc)
        fail(message)
        sys.exit(1)
