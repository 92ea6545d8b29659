"""The Heroku buildpack API, as data: which buildpacks a build uses, what their ``bin/release``
says, and the environment a build runs in. No I/O except reading the files it is given
(without following links out of the app: isolate/paths.py); build.py runs the buildpacks.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dokuen.errors import DokuenError, InvalidName
from dokuen.isolate.paths import is_file
from dokuen.names import check_config_key

# Tried in this order when the app names no buildpack: the first whose bin/detect says yes.
BUNDLED = ("python", "node", "static", "procfile")
STACK = "dokuen-1"
# What each bundled buildpack's bin/detect looks for, as data, so that choosing one starts
# no process: (the name it prints, files one of which must be at the root, files that must
# not be). tests/test_detect.py holds the scripts and this table to the same answers.
BUNDLED_DETECT: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "python": (
        "Python",
        ("requirements.txt", "Pipfile", "Pipfile.lock", "pyproject.toml", "setup.py"),
        (),
    ),
    "node": ("Node.js", ("package.json",), ()),
    "static": ("Static HTML", ("index.html",), ("Procfile",)),
    "procfile": ("Procfile", ("Procfile",), ()),
}
_TYPE = re.compile(r"[A-Za-z0-9_-]+")
# git URLs: scheme://..., or scp-like user@host:path. Never starting with "-" (a git option).
_GIT_URL = re.compile(r"(?:https?|git|ssh|file)://[^\s]+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+")


class BuildError(DokuenError):
    """A build that failed: the buildpack's own output says why, the message says where."""


@dataclass(frozen=True)
class Source:
    """Where a buildpack comes from: a bundled name, a local directory or a git URL
    (optionally ``#ref`` for a branch or tag)."""

    text: str

    @property
    def bundled(self) -> bool:
        return self.text in BUNDLED

    @property
    def local(self) -> Path | None:
        return Path(self.text) if self.text.startswith("/") else None

    @property
    def shown(self) -> str:
        """The reference as it may be printed: a git URL's password is left out."""
        return re.sub(r"(://[^/@:\s]*):[^/@\s]*@", r"\1:***@", self.text)

    @property
    def git(self) -> tuple[str, str | None]:
        url, _, ref = self.text.partition("#")
        return url, ref or None


def parse_source(text: str, origin: str) -> Source:
    """Check one buildpack reference (from ``BUILDPACK_URL`` or a ``.buildpacks`` line).

    Raises DokuenError naming ``origin`` when it is neither a bundled buildpack, an absolute
    directory nor a git URL.
    """
    text = text.strip()
    url, _, ref = text.partition("#")
    ok_ref = not ref or (re.fullmatch(r"[A-Za-z0-9._/-]+", ref) and not ref.startswith("-"))
    if text in BUNDLED or (
        ok_ref
        and (
            (text.startswith("/") and not re.search(r"[\s\x00-\x1f]", text))
            or _GIT_URL.fullmatch(url)
        )
    ):
        return Source(text)
    raise DokuenError(
        f"{origin}: {text!r} is not a buildpack (use one of {', '.join(BUNDLED)}, an absolute "
        "directory, or a git URL like https://github.com/heroku/heroku-buildpack-python)"
    )


def parse_buildpacks_file(text: str, origin: str = ".buildpacks") -> list[Source]:
    """A ``.buildpacks`` file: one buildpack a line; blank lines and ``#`` comments skipped."""
    sources = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip() and not line.strip().startswith("#"):
            sources.append(parse_source(line, f"{origin}:{number}"))
    if not sources:
        raise DokuenError(f"{origin}: names no buildpack (one URL or directory a line)")
    return sources


@dataclass(frozen=True)
class ReleaseInfo:
    """What a buildpack's ``bin/release`` says: process types the Procfile may lack, and
    config defaults."""

    process_types: Mapping[str, str] = field(default_factory=dict)
    config_vars: Mapping[str, str] = field(default_factory=dict)


# Bundled buildpacks whose bin/compile and bin/release only ever say the same thing: a
# build that uses one alone starts no process at all (name -> what bin/compile prints, what
# bin/release says). tests/test_detect.py holds the scripts to this table.
BUNDLED_AS_DATA: dict[str, tuple[str, ReleaseInfo]] = {
    "procfile": (
        "-----> Nothing to build: the Procfile's commands run as they are\n",
        ReleaseInfo(),
    ),
}


def parse_release(text: str, origin: str) -> ReleaseInfo:
    """Parse ``bin/release`` output (YAML, read with ``safe_load``).

    Raises BuildError naming ``origin`` when it is not a mapping of the expected shape.
    """
    import yaml  # noqa: PLC0415 (only a build reads it: the daemon starts without it)

    try:
        data: Any = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise BuildError(f"{origin}: its output is not YAML ({exc})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BuildError(f"{origin}: expected a YAML mapping, got {type(data).__name__}")
    types = _string_map(data.get("default_process_types"), f"{origin}: default_process_types")
    for name, command in types.items():
        if not _TYPE.fullmatch(name) or not command.strip():
            raise BuildError(f"{origin}: bad default process type {name!r}: {command!r}")
    config = _string_map(data.get("config_vars"), f"{origin}: config_vars")
    try:
        for key in config:
            check_config_key(key)
    except InvalidName as exc:
        raise BuildError(f"{origin}: {exc}") from None
    return ReleaseInfo(types, config)


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BuildError(f"{where}: expected a mapping, got {type(value).__name__}")
    scalars = (str, int, float, bool)
    if not all(isinstance(k, str) and isinstance(v, scalars) for k, v in value.items()):
        raise BuildError(f"{where}: expected names mapped to text")
    return {key: str(item) for key, item in value.items()}


def merge_release(infos: list[ReleaseInfo]) -> ReleaseInfo:
    """Several buildpacks' answers: a later buildpack's types and defaults win."""
    types: dict[str, str] = {}
    config: dict[str, str] = {}
    for info in infos:
        types.update(info.process_types)
        config.update(info.config_vars)
    return ReleaseInfo(types, config)


def detect_bundled(name: str, build_dir: Path) -> str:
    """What bundled buildpack ``name``'s bin/detect would print for ``build_dir`` ("" for
    no), as its ``[[ -f FILE ]]`` tests decide: regular files, links followed while they
    stay in the app (dokuend runs this as root, the script would run as the build uid).

    Raises:
        UnsafeFile: one of those files is a link out of the app (the same line whether
            or not its target exists: a push learns nothing of root's files).
    """
    shown, any_of, none_of = BUNDLED_DETECT[name]
    if any(is_file(build_dir, f) for f in any_of) and not any(
        is_file(build_dir, f) for f in none_of
    ):
        return shown
    return ""


def build_environment(
    path: str, home: Path, commit: str | None, uv: str | None = None
) -> dict[str, str]:
    """The whole environment of a build step: nothing of the daemon's, no config vars (those
    are in ENV_DIR, for the buildpack to read if it wants them). ``DOKUEN_UV`` names the uv
    the bundled python buildpack installs with, when there is one."""
    env = {"PATH": path, "HOME": str(home), "STACK": STACK, "SOURCE_VERSION": commit or ""}
    if uv:
        env["DOKUEN_UV"] = uv
    return env
