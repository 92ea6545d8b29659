"""Service templates filled with checked values: nothing is escaped into a unit or a plist.

A value that goes into a template must be an absolute path (or a ``PATH`` list of them) made
of a safe set of characters: no space, ``%`` (a systemd specifier), ``$`` (a variable in
both), quotes, ``&``/``<`` (XML) or newlines. Anything else is refused with an error that
says so, never quoted.
"""

import re
import string
from collections.abc import Mapping
from pathlib import Path

from dokuen.errors import ServiceError

_SAFE_PATH = re.compile(r"/[A-Za-z0-9_./+@-]*")


def check_path(path: Path | str, what: str) -> str:
    """Return ``path`` as text if it is absolute and of the safe charset; raise ServiceError
    naming ``what`` (``dokuend``, ``the state directory``) otherwise."""
    text = str(path)
    if not _SAFE_PATH.fullmatch(text) or "/../" in f"{text}/":
        raise ServiceError(
            f"{what} {text!r} cannot go into a service file: use an absolute path of "
            "letters, digits and '_./+@-' only (no spaces)"
        )
    return text


def check_search_path(value: str) -> str:
    """A ``PATH`` value: absolute directories of the safe charset joined by ``:``."""
    for directory in value.split(":"):
        check_path(directory, "PATH entry")
    return value


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill ``$name`` placeholders. Raises ServiceError for a placeholder without a value."""
    try:
        return string.Template(template).substitute(values)
    except (KeyError, ValueError) as exc:
        raise ServiceError(f"service template has a placeholder with no value: {exc}") from None
