"""The environment a process gets: exactly what DESIGN.md lists, nothing of the daemon's."""

import io
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from dokuen.errors import UnsafeFile
from dokuen.isolate.paths import read_optional
from dokuen.supervise.formation import ProcessSpec

DOTENV_LIMIT = 1 << 20  # bytes a .env may hold


def read_dotenv(app_dir: Path) -> dict[str, str]:
    """The ``.env`` defaults of an app (foreman/honcho syntax); empty when there is none.

    Read without following a link (``app_dir`` is written by an app or its build).

    Raises:
        UnsafeFile: ``.env`` is a symbolic link, not a regular file, over ``DOTENV_LIMIT``
            bytes, or not UTF-8 text.
    """
    data = read_optional(app_dir, ".env", DOTENV_LIMIT)
    if data is None:
        return {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnsafeFile(f".env:{line}: cannot read it as UTF-8 text ({exc.reason})") from None
    # No interpolation: python-dotenv would fill ${VAR} from the daemon's own environment.
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
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
