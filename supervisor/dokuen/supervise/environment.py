"""The environment a process gets: exactly what DESIGN.md lists, nothing of the daemon's."""

from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from dokuen.supervise.formation import ProcessSpec


def read_dotenv(app_dir: Path) -> dict[str, str]:
    """The ``.env`` defaults of an app (foreman/honcho syntax); empty when there is none."""
    path = app_dir / ".env"
    if not path.is_file():
        return {}
    # No interpolation: python-dotenv would fill ${VAR} from the daemon's own environment.
    values = dotenv_values(path, interpolate=False)
    return {key: value for key, value in values.items() if value is not None}


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
