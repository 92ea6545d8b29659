"""How git and sshd call back into Dokuen: the pre-receive hook of every app's repository and
the forced command of every authorized ssh key both run ``dokuenctl --socket SOCKET ...``.

That command line is written unquoted into a shell script and into authorized_keys, so its
parts are held to a plain character set: anything else is refused, never escaped.
"""

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from dokuen.errors import SettingsError

PLAIN_PATH = re.compile(r"/[A-Za-z0-9/._+-]*")
PLAIN_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")
PLAIN_OPTION = re.compile(r"--[a-z]+(?:-[a-z]+)*")


@dataclass(frozen=True)
class Entrypoint:
    """The installed dokuenctl and the control socket it must talk to."""

    dokuenctl: Path
    socket: Path

    def command(self, *args: str) -> str:
        """``/abs/dokuenctl --socket /abs/dokuend.sock ARGS...`` as one line of text.

        Raises:
            SettingsError: a path outside ``[A-Za-z0-9/._+-]`` (it would need quoting).
        """
        parts = [
            _plain_path("dokuenctl", self.dokuenctl),
            "--socket",
            _plain_path("the control socket", self.socket),
        ]
        for arg in args:
            # Callers pass fixed words, fixed options and checked names.
            if not (PLAIN_WORD.fullmatch(arg) or PLAIN_OPTION.fullmatch(arg)):
                raise ValueError(f"not a plain word: {arg!r}")
        return " ".join([*parts, *args])

    def python(self) -> Path | None:
        """The interpreter dokuenctl runs on, from its ``#!`` line as pip writes it, when
        that is one plain path to a program; None otherwise."""
        try:
            with self.dokuenctl.open("rb") as script:
                first = script.readline(512)
        except OSError:
            return None
        words = first[2:].decode(errors="replace").split() if first.startswith(b"#!") else []
        if len(words) != 1 or not PLAIN_PATH.fullmatch(words[0]):
            return None
        return Path(words[0]) if os.access(words[0], os.X_OK) else None

    def module_command(self, module: str) -> str | None:
        """``/abs/python -I -m MODULE --socket /abs/dokuend.sock``: a module of Dokuen run
        by dokuenctl's interpreter without dokuenctl's own imports; None when that
        interpreter is not known (then ``command`` it is)."""
        python = self.python()
        if python is None or not re.fullmatch(r"dokuen(\.[a-z_]+)+", module):
            return None
        socket = _plain_path("the control socket", self.socket)
        return " ".join([str(python), "-I", "-m", module, "--socket", socket])


def _plain_path(what: str, path: Path) -> str:
    text = str(path)
    if not PLAIN_PATH.fullmatch(text):
        raise SettingsError(
            f"the path of {what}, {text!r}, must be absolute and use only letters, digits and "
            "'/._+-' to be written into git hooks and authorized_keys (move it, or set "
            "DOKUEN_HOME or DOKUEN_SOCKET to a plain path)"
        )
    return text


def find_dokuenctl(argv0: str | None = None) -> Path | None:
    """The dokuenctl installed beside the running program (a venv's or pip's script
    directory), else the one on PATH; None when there is none."""
    beside = [Path(sys.executable).parent / "dokuenctl"]
    if argv0:
        beside.insert(0, Path(argv0).absolute().parent / "dokuenctl")
    for candidate in beside:
        if candidate.is_file():
            return candidate
    found = shutil.which("dokuenctl")
    return Path(found).absolute() if found else None
