"""Directories shipped with Dokuen: the bundled buildpacks and the service templates.

In a wheel they sit inside the package (``dokuen/buildpacks``, put there by the build's
force-include); in a checkout (an editable install) they are at the top of the tree.
"""

from pathlib import Path

from dokuen.errors import NotFound

_PACKAGE = Path(__file__).resolve().parent


def shipped(name: str) -> Path:
    """The shipped directory ``name`` (``buildpacks``, ``systemd``, ``launchd``).

    Raises NotFound when neither the package nor the checkout has it (a broken install).
    """
    for candidate in (_PACKAGE / name, _PACKAGE.parents[1] / name):
        if candidate.is_dir():
            return candidate
    raise NotFound(
        f"{name}/ is missing from this Dokuen install (reinstall it: pip install dokuen)"
    )
