"""The formation: how many processes of each Procfile type run, and the specs it expands to."""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dokuen.errors import InvalidName
from dokuen.names import check_process_type
from dokuen.supervise.procfile import Procfile

# Heroku runs `release` once per deploy, never as a long-running process.
ONE_OFF_TYPES = frozenset({"release"})
MAX_SCALE = 500  # per type; each process also needs a port from DOKUEN_PORT_RANGE
_SCALE = re.compile(r"(?P<type>[^=]+)=(?P<count>.*)")


@dataclass(frozen=True)
class ProcessSpec:
    """One long-running process of an app: ``web.2`` runs the ``web`` command."""

    app: str
    type: str
    index: int
    command: str

    @property
    def name(self) -> str:
        return f"{self.type}.{self.index}"


def default_formation(procfile: Procfile, previous: Mapping[str, int]) -> dict[str, int]:
    """The formation for a new release: ``previous`` counts for types that remain, 1 for new
    types, nothing for types the Procfile dropped, and never a ``release`` process."""
    return {
        process_type: previous.get(process_type, 1)
        for process_type in procfile.types
        if process_type not in ONE_OFF_TYPES
    }


def parse_scale(args: Iterable[str], procfile: Procfile) -> dict[str, int]:
    """Parse ``TYPE=N`` arguments against the app's Procfile.

    Raises:
        InvalidName: for a malformed argument, an unknown or one-off type, or a count
            that is not a whole number from 0 to MAX_SCALE.
    """
    changes: dict[str, int] = {}
    for arg in args:
        match = _SCALE.fullmatch(arg)
        if match is None:
            raise InvalidName(f"invalid scale {arg!r} (use TYPE=N, e.g. web=2)")
        process_type = check_process_type(match["type"])
        if process_type not in procfile.types:
            known = ", ".join(t for t in procfile.types if t not in ONE_OFF_TYPES)
            raise InvalidName(f"unknown process type {process_type!r} (the Procfile has: {known})")
        if process_type in ONE_OFF_TYPES:
            raise InvalidName(f"{process_type!r} runs once per deploy and cannot be scaled")
        count = match["count"]
        if not re.fullmatch(r"[0-9]{1,4}", count) or int(count) > MAX_SCALE:
            raise InvalidName(
                f"invalid count {count!r} for {process_type!r} (use a number from 0 to {MAX_SCALE})"
            )
        changes[process_type] = int(count)
    if not changes:
        raise InvalidName("nothing to scale (use TYPE=N, e.g. web=2)")
    return changes


def expand(app: str, procfile: Procfile, formation: Mapping[str, int]) -> list[ProcessSpec]:
    """Every process the formation asks for, in Procfile order then by index."""
    return [
        ProcessSpec(app, process_type, index, command)
        for process_type, command in procfile.commands
        for index in range(1, formation.get(process_type, 0) + 1)
    ]
