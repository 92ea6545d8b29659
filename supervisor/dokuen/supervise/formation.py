"""The formation: how many processes of each Procfile type run, and the specs it expands to."""

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from dokuen.errors import InvalidName
from dokuen.names import check_process_type
from dokuen.supervise.procfile import Procfile

# Heroku runs `release` once per deploy, never as a long-running process.
ONE_OFF_TYPES = frozenset({"release"})
MAX_SCALE = 500  # per type; each process also needs a port from DOKUEN_PORT_RANGE
# TYPE=N sets a count; TYPE+N and TYPE-N change it (Heroku's ps:scale web+1).
_SCALE = re.compile(r"(?P<type>[^=+-]+)(?P<op>[=+-])(?P<count>.*)")


@dataclass(frozen=True)
class ProcessSpec:
    """One long-running process of an app: ``web.2`` runs the ``web`` command."""

    app: str
    type: str
    index: int
    command: str

    @cached_property
    def name(self) -> str:  # one string for every use (slots, cgroups, records)
        return f"{self.type}.{self.index}"

    def row(self) -> dict[str, str | int]:
        """The keys of a ``ps --json`` row that the spec alone decides."""
        return {
            "app": self.app,
            "name": self.name,
            "type": self.type,
            "index": self.index,
            "command": self.command,
        }


def default_formation(procfile: Procfile, previous: Mapping[str, int]) -> dict[str, int]:
    """The formation for a new release: ``previous`` counts for types that remain, 1 for new
    types, nothing for types the Procfile dropped, and never a ``release`` process."""
    return {
        process_type: previous.get(process_type, 1)
        for process_type in procfile.types
        if process_type not in ONE_OFF_TYPES
    }


def parse_scale(
    args: Iterable[str], procfile: Procfile, current: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Parse ``TYPE=N``, ``TYPE+N`` and ``TYPE-N`` arguments against the app's Procfile;
    the relative forms change the ``current`` formation's count.

    Raises:
        InvalidName: for a malformed argument, an unknown or one-off type, or a count
            that is not (or would not become) a whole number from 0 to MAX_SCALE.
    """
    changes: dict[str, int] = {}
    for arg in args:
        match = _SCALE.fullmatch(arg)
        if match is None:
            raise InvalidName(f"invalid scale {arg!r} (use TYPE=N or TYPE+N, e.g. web=2)")
        process_type = check_process_type(match["type"])
        if process_type not in procfile.types:
            known = ", ".join(t for t in procfile.types if t not in ONE_OFF_TYPES)
            raise InvalidName(f"unknown process type {process_type!r} (the Procfile has: {known})")
        if process_type in ONE_OFF_TYPES:
            raise InvalidName(f"{process_type!r} runs once per deploy and cannot be scaled")
        count, limits = match["count"], f"(use a number from 0 to {MAX_SCALE})"
        if not re.fullmatch(r"[0-9]{1,4}", count) or (
            match["op"] == "=" and int(count) > MAX_SCALE
        ):
            raise InvalidName(f"invalid count {count!r} for {process_type!r} {limits}")
        before = changes.get(process_type, (current or {}).get(process_type, 0))
        wanted = {"=": int(count), "+": before + int(count), "-": before - int(count)}[match["op"]]
        if not 0 <= wanted <= MAX_SCALE:
            raise InvalidName(
                f"invalid count {arg!r}: {process_type!r} would have {wanted} processes {limits}"
            )
        changes[process_type] = wanted
    if not changes:
        raise InvalidName("nothing to scale (use TYPE=N, e.g. web=2)")
    return changes


def procfile_order(types: Sequence[str]) -> Callable[[ProcessSpec], tuple[int, str, int]]:
    """A sort key for specs: the Procfile's order of ``types`` (others after, by name), then
    the index."""
    rank = {process_type: i for i, process_type in enumerate(types)}
    return lambda spec: (rank.get(spec.type, len(rank)), spec.type, spec.index)


def in_procfile_order(formation: Mapping[str, int], procfile: Procfile) -> dict[str, int]:
    """The formation with its types in the Procfile's order (any the Procfile lacks last)."""
    order = {process_type: i for i, process_type in enumerate(procfile.types)}
    return dict(sorted(formation.items(), key=lambda item: order.get(item[0], len(order))))


def expand(app: str, procfile: Procfile, formation: Mapping[str, int]) -> list[ProcessSpec]:
    """Every process the formation asks for, in Procfile order then by index."""
    return [
        ProcessSpec(app, process_type, index, command)
        for process_type, command in procfile.commands
        for index in range(1, formation.get(process_type, 0) + 1)
    ]
