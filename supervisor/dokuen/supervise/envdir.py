"""App config as a daemontools envdir: one file per variable, its content the value."""

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from dokuen.errors import InvalidName
from dokuen.names import check_config_key
from dokuen.store import injected_fault


def read_envdir(path: Path) -> dict[str, str]:
    """Every variable in the envdir (a missing directory is an empty config).

    As daemontools' envdir does, a single trailing newline is dropped and NUL bytes read as
    newlines, so values written by an editor read back as typed.
    """
    if not path.is_dir():
        return {}
    config = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        check_config_key(entry.name)  # a file added by hand with a bad name is refused
        value = entry.read_text(encoding="utf-8", errors="surrogateescape")
        config[entry.name] = value.removesuffix("\n").replace("\0", "\n")
    return config


def protect(path: Path) -> None:
    """Make the envdir (config holds secrets) reachable by its owner alone."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def write_envdir(path: Path, changes: Mapping[str, str], removals: Iterable[str] = ()) -> None:
    """Set and unset variables. Each file is replaced atomically (write, fsync, rename),
    and only once every new value is on disk."""
    for key, value in changes.items():
        check_config_key(key)
        if "\0" in value:
            raise InvalidName(
                f"the value of {key} contains a NUL byte, which no environment can hold"
            )
        try:
            value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise InvalidName(f"the value of {key} is not valid text") from None
    protect(path)
    # Every new value is written in full before any replaces an old one: a write that fails
    # (a full disk) leaves the config as it was.
    written: list[Path] = []
    try:
        for key, value in changes.items():
            temporary = path / f".{key}.tmp"
            written.append(temporary)
            with temporary.open("w", encoding="utf-8", errors="surrogateescape") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(value.replace("\n", "\0"))
                handle.flush()
                injected_fault(path / key)
                os.fsync(handle.fileno())
    except BaseException as exc:
        for temporary in written:
            temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write() names no file: say which
        raise
    for key in changes:
        (path / f".{key}.tmp").replace(path / key)
    for key in removals:
        (path / check_config_key(key)).unlink(missing_ok=True)
