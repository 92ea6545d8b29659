"""What installing or removing the service does, as data: files to write, directories to
make, commands to run (argv lists, never a shell), accounts to create or delete. systemd.py
and launchd.py build these lists; install.py carries them out and says what it did."""

from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class OnFailure(Enum):
    ERROR = "error"  # stop there: the failure is the command's error
    WARN = "warn"  # say so and go on (undoing something that may not be there)
    IGNORE = "ignore"  # go on quietly (a bootout of a job that was never loaded)


@dataclass(frozen=True)
class File:
    path: Path
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class Directory:
    """Made (with its parents) when missing; an existing one is left as it is."""

    path: Path
    mode: int = 0o750


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    on_failure: OnFailure = OnFailure.ERROR


@dataclass(frozen=True)
class Account:
    """A system user: ``argv`` creates it when ``create`` and it is missing, or deletes it
    when not ``create`` and it exists; otherwise nothing is run."""

    name: str
    argv: tuple[str, ...]
    create: bool


@dataclass(frozen=True)
class Removal:
    """A file, or with ``tree`` a whole directory; nothing happens when it is not there."""

    path: Path
    tree: bool = False


Step = File | Directory | Command | Account | Removal
