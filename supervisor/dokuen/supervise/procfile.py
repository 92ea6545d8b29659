"""A small strict Procfile parser: text in, ``Procfile`` out, every error with file and line."""

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from dokuen.errors import ProcfileError
from dokuen.isolate.paths import read_file

_LINE = re.compile(r"(?P<type>[^:]*?)\s*:(?P<command>.*)")
_TYPE = re.compile(r"[A-Za-z0-9_-]+")
LIMIT = 1 << 20  # bytes a Procfile may hold


@dataclass(frozen=True)
class Procfile:
    """Process types in file order, each with the shell command that runs it."""

    commands: tuple[tuple[str, str], ...]

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.commands)

    def command(self, process_type: str) -> str:
        return dict(self.commands)[process_type]

    def one_off(self, line: str) -> str:
        """What ``run`` runs for ``line``: when its first word is a process type, that
        type's command with the other words appended (``run web --debug``, as foreman and
        Heroku do); any other line as it is."""
        try:
            words = shlex.split(line)
        except ValueError:  # unbalanced quotes: the shell will say what is wrong
            return line
        if not words or words[0] not in self.types:
            return line
        return " ".join([self.command(words[0]), *map(shlex.quote, words[1:])])


def parse_procfile(text: str, filename: str = "Procfile") -> Procfile:
    """Parse Procfile text.

    Lines are ``TYPE: COMMAND``; blank lines and lines starting with ``#`` are skipped.

    Raises:
        ProcfileError: for any other line, a bad or duplicate type, an empty command, or a
            file with no process type at all; the message starts with ``filename:line:``.
    """
    commands: dict[str, str] = {}
    # Only "\n" ends a line (strip() drops the "\r" of CRLF): splitlines() would also cut at
    # form feeds, U+2028 and the like, splitting a command and misnumbering later lines.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{filename}:{number}"
        match = _LINE.fullmatch(line)
        if match is None:
            raise ProcfileError(f"{where}: expected 'TYPE: COMMAND', got {line!r}")
        process_type, command = match["type"], match["command"].strip()
        if not _TYPE.fullmatch(process_type):
            raise ProcfileError(
                f"{where}: invalid process type {process_type!r} (use letters, digits, '_' and '-')"
            )
        if process_type in commands:
            raise ProcfileError(f"{where}: duplicate process type {process_type!r}")
        if not command:
            raise ProcfileError(f"{where}: process type {process_type!r} has an empty command")
        commands[process_type] = command
    if not commands:
        raise ProcfileError(f"{filename}: no process types (add a line like 'web: ./server')")
    return Procfile(tuple(commands.items()))


def read_procfile(app_dir: Path) -> Procfile:
    """Read and parse ``app_dir/Procfile`` without following a link (``app_dir`` is written
    by an app or its build).

    Raises:
        ProcfileError: it is missing or bad.
        UnsafeFile: it is a symbolic link, not a regular file, or over ``LIMIT`` bytes.
    """
    path = app_dir / "Procfile"
    try:
        data = read_file(app_dir, "Procfile", LIMIT)
    except FileNotFoundError:
        raise ProcfileError(
            f"no Procfile in {app_dir} (add one with a line like 'web: ./server')"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ProcfileError(f"{path}:{line}: cannot read it as UTF-8 text ({exc})") from None
    return parse_procfile(text, str(path))
