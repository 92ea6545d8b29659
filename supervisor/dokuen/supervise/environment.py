"""The environment a process gets: exactly what DESIGN.md lists, nothing of the daemon's."""

import io
from collections.abc import Iterable, Mapping
from pathlib import Path

from dokuen.errors import UnsafeFile
from dokuen.isolate.paths import read_optional
from dokuen.supervise.formation import ProcessSpec

DOTENV_LIMIT = 1 << 20  # bytes a .env may hold


def read_dotenv(app_dir: Path, config: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``.env`` defaults of an app (foreman/honcho syntax); empty when there is none.
    ``${VAR}`` and ``${VAR:-default}`` are expanded as python-dotenv expands them, against
    the file's earlier entries and ``config`` (``expand_dotenv``). Read without following a
    link (``app_dir`` is written by an app or its build).

    Raises:
        UnsafeFile: ``.env`` is a symbolic link, not a regular file, over ``DOTENV_LIMIT``
            bytes, not UTF-8 text, or holds a NUL byte.
    """
    data = read_optional(app_dir, ".env", DOTENV_LIMIT)
    if data is None:
        return {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnsafeFile(f".env:{line}: cannot read it as UTF-8 text ({exc.reason})") from None
    if (nul := data.find(b"\0")) >= 0:  # execve would refuse it, as a ValueError
        line = data.count(b"\n", 0, nul) + 1
        raise UnsafeFile(f".env:{line}: holds a NUL byte, which no environment can; remove it")
    # Parsed without interpolation: python-dotenv would fill ${VAR} from the daemon's own
    # environment (its secrets, its PATH); expand_dotenv fills it from the app's alone.
    # Imported here: python-dotenv costs the daemon 1.2 MiB, and most apps have no .env.
    from dotenv.main import DotEnv  # noqa: PLC0415

    entries = DotEnv(None, stream=io.StringIO(text), interpolate=False).parse()
    return expand_dotenv(entries, config or {})


def expand_dotenv(
    entries: Iterable[tuple[str, str | None]], config: Mapping[str, str]
) -> dict[str, str]:
    """Expand ``.env`` entries in file order, each against the entries before it and the
    app's ``config`` (which wins, as it does in the process's environment). An unknown
    variable expands to its default, or to nothing; ``$VAR`` without braces stays as is,
    as with python-dotenv. A key without ``=`` is dropped; the last of a repeated key wins.
    """
    from dotenv.variables import parse_variables  # noqa: PLC0415 (see read_dotenv)

    values: dict[str, str] = {}
    for key, value in entries:
        if value is None:
            continue
        scope: dict[str, str | None] = {**values, **config}
        values[key] = "".join(atom.resolve(scope) for atom in parse_variables(value))
    return values


def process_environment(
    spec: ProcessSpec,
    port: int,
    home: Path,
    path: str,
    defaults: Mapping[str, str],
    config: Mapping[str, str],
) -> dict[str, str]:
    """Build a process's environment.

    Later layers win: ``HOME`` and ``PATH``, then the ``.env`` defaults, then the app's
    config, then what the platform owns (``PORT``, ``DYNO``, ``PS``, ``APP``).
    """
    return {
        "HOME": str(home),
        "PATH": path,
        **defaults,
        **config,
        "PORT": str(port),
        "DYNO": spec.name,
        "PS": spec.name,
        "APP": spec.app,
    }
