"""The environment a process gets: exactly what DESIGN.md lists, nothing of the daemon's."""

from collections.abc import Iterable, Mapping
from pathlib import Path

from dotenv.main import DotEnv
from dotenv.variables import parse_variables

from dokuen.supervise.formation import ProcessSpec


def read_dotenv(app_dir: Path, config: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``.env`` defaults of an app (foreman/honcho syntax); empty when there is none.
    ``${VAR}`` and ``${VAR:-default}`` are expanded as python-dotenv expands them, against
    the file's earlier entries and ``config`` (``expand_dotenv``)."""
    path = app_dir / ".env"
    if not path.is_file():
        return {}
    # Parsed without interpolation: python-dotenv would fill ${VAR} from the daemon's own
    # environment (its secrets, its PATH); expand_dotenv fills it from the app's alone.
    return expand_dotenv(DotEnv(path, interpolate=False).parse(), config or {})


def expand_dotenv(
    entries: Iterable[tuple[str, str | None]], config: Mapping[str, str]
) -> dict[str, str]:
    """Expand ``.env`` entries in file order, each against the entries before it and the
    app's ``config`` (which wins, as it does in the process's environment). An unknown
    variable expands to its default, or to nothing; ``$VAR`` without braces stays as is,
    as with python-dotenv. A key without ``=`` is dropped; the last of a repeated key wins.
    """
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
