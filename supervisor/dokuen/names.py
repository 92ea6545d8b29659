"""The grammars of names users give us: apps, domains, process types, config keys, ssh key
names.

Everything is checked with ``re.fullmatch``: ``$`` would let a trailing newline through.
"""

import re
from collections.abc import Iterable

from dokuen.errors import InvalidName, NotFound

APP_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
PROCESS_TYPE = re.compile(r"[A-Za-z0-9_-]+")
CONFIG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PROCESS_NAME = re.compile(r"(?P<type>[A-Za-z0-9_-]+)(?:\.(?P<index>[1-9][0-9]*))?")
# Written unquoted into authorized_keys (a forced command's argument and the key's comment).
SSH_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
BACKUP_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z")  # the UTC time it was taken
MAX_DOMAIN = 253
_LABEL = APP_NAME.pattern.replace("[a-z]", "[a-z0-9]", 1)  # host labels may start with a digit
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


# Names the platform answers for itself: its log sources (nginx[dokuen], postgres[dokuen]),
# its account, and host names people expect to be the machine's own.
RESERVED_APP_NAMES = frozenset({"dokuen", "nginx", "postgres", "root", "www"})


def check_new_app_name(name: str) -> str:
    """``check_app_name``, and not one of the names the platform keeps for itself (an app
    made under such a name before it was reserved keeps working)."""
    check_app_name(name)
    if name in RESERVED_APP_NAMES:
        raise InvalidName(
            f"app name {name!r} is reserved for the platform (pick another, like {name}-app)"
        )
    return name


def check_app_name(name: str) -> str:
    """Return ``name`` if it is a valid app name (a lowercase DNS label).

    Raises:
        InvalidName: naming the rule, so the user can pick a name that fits.
    """
    if not APP_NAME.fullmatch(name):
        raise InvalidName(
            f"invalid app name {name!r} (use 1-63 lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-')"
        )
    return name


def check_process_type(name: str) -> str:
    """Return ``name`` if it is a valid Procfile process type, else raise InvalidName."""
    if not PROCESS_TYPE.fullmatch(name):
        raise InvalidName(f"invalid process type {name!r} (use letters, digits, '_' and '-')")
    return name


def check_config_key(key: str) -> str:
    """Return ``key`` if it is a valid environment variable name, else raise InvalidName."""
    if not CONFIG_KEY.fullmatch(key):
        raise InvalidName(
            f"invalid config key {key!r} (use letters, digits and '_', not starting with a digit)"
        )
    return key


# What dokuend gives each process itself: a config var of that name would never be seen.
PLATFORM_VARS = {
    "PORT": "dokuend gives each process a port of its own in PORT; listen where it says",
    "DYNO": "dokuend sets DYNO to the process's name (web.1)",
    "PS": "dokuend sets PS to the process's name (web.1)",
}


# App config vars that hold the app in for the sake of the others (its cgroup's limits):
# only an admin sets or unsets them (a key scoped to the app may not: ssh/scope.py), and a
# rollback leaves them as they are (apps/releasing.py).
LIMIT_VARS = ("DOKUEN_MEMORY_LIMIT", "DOKUEN_PROCESS_LIMIT")


def check_settable_config_key(key: str) -> str:
    """``check_config_key``, and not a variable the platform sets for each process."""
    check_config_key(key)
    if key in PLATFORM_VARS:
        raise InvalidName(f"config var {key} cannot be set: {PLATFORM_VARS[key]}")
    return key


def check_ssh_key_name(name: str) -> str:
    """Return ``name`` if it is a valid name for an authorized ssh key, else raise InvalidName."""
    if not SSH_KEY_NAME.fullmatch(name):
        raise InvalidName(
            f"invalid ssh key name {name!r} (use up to 64 letters, digits, '.', '_', '@' and "
            "'-', starting with a letter or digit, e.g. alice@laptop)"
        )
    return name


def check_backup_id(text: str) -> str:
    """Return ``text`` if it is a backup id (``20261125T224400Z``), else raise InvalidName."""
    if not BACKUP_ID.fullmatch(text):
        raise InvalidName(
            f"invalid backup id {text!r} (like 20261125T224400Z; list them: dokuenctl backups APP)"
        )
    return text


def parse_process_name(text: str) -> tuple[str, int | None]:
    """Split ``web`` or ``web.2`` into (type, index or None); raise InvalidName otherwise."""
    match = PROCESS_NAME.fullmatch(text)
    if not match:
        raise InvalidName(f"invalid process name {text!r} (use TYPE or TYPE.N, e.g. web.1)")
    index = match["index"]
    return match["type"], int(index) if index else None


def not_found(kind: str, name: str, known: Iterable[str]) -> NotFound:
    """Build a NotFound error that suggests the closest known name, if any."""
    import difflib  # noqa: PLC0415 (only for a name not found)

    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return NotFound(f"no {kind} named {name!r}{hint}")


def check_domain(name: str) -> str:
    """Return ``name`` if it is a lowercase host name (DNS labels joined by dots, at most
    253 characters); raise InvalidName otherwise. Wildcards are refused too."""
    if len(name) > MAX_DOMAIN or not _DOMAIN.fullmatch(name):
        raise InvalidName(
            f"invalid domain {name!r} (use lowercase letters, digits, '-' and dots, like "
            f"blog.example.com, at most {MAX_DOMAIN} characters)"
        )
    return name
