"""cli/sharedrepr.py: dokuend's dataclasses share one ``__repr__`` that writes what
``dataclasses`` would have compiled for each. The same classes are made in two processes,
one with the shared repr and one without, and every repr must read the same: fields left
out of the repr, class variables and init-only variables, slots, frozen classes,
inheritance, a class's own ``__repr__`` and ``repr=False`` kept, an object inside itself,
nested dataclasses, and the daemon's own classes."""

import json
import subprocess
import sys

SAMPLES = """
import dataclasses, json, sys
from dataclasses import InitVar, dataclass, field
from typing import ClassVar

@dataclass
class Plain:
    a: int
    b: str = "x"
    hidden: int = field(default=3, repr=False)
    kind: ClassVar[str] = "class variable"
    seed: InitVar[int] = 0

@dataclass(frozen=True, slots=True)
class Slotted:
    name: str
    inner: Plain

@dataclass
class Child(Plain):
    c: float = 1.5

@dataclass
class Own:
    a: int
    def __repr__(self) -> str:
        return "own"

@dataclass(repr=False)
class Without:
    a: int

@dataclass(kw_only=True)
class Node:
    value: int
    children: list = field(default_factory=list)

class Plain2(Plain):
    pass

loop = Node(value=1)
loop.children.append(loop)
from dokuen.supervise.formation import ProcessSpec
from dokuen.settings import PortRange
from dokuen.supervise.restart import RestartPolicy
objects = [
    Plain(1), Slotted("s", Plain(2, "y")), Child(3, c=2.0), Own(4), Plain2(5),
    Node(value=2, children=[Node(value=3)]), loop,
    ProcessSpec("blog", "web", 1, "python app.py"), PortRange(20000, 20100), RestartPolicy(),
]
shown = [repr(o) for o in objects]
shown.append(repr(Without(6)).split(" object at ")[0])
module = sys.modules.get("dokuen.cli.sharedrepr")
shares = [type(o).__repr__ is getattr(module, "dataclass_repr", None) for o in objects]
print(json.dumps([shown, shares]))
"""


def reprs(shared: bool) -> tuple[list[str], list[bool]]:
    first = "from dokuen.cli.sharedrepr import share_dataclass_repr\nshare_dataclass_repr()\n"
    code = (first if shared else "") + SAMPLES
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    shown, shares = json.loads(done.stdout)
    return shown, shares


def test_the_shared_repr_reads_as_the_compiled_one() -> None:
    compiled, _ = reprs(shared=False)
    shared, shares = reprs(shared=True)
    assert shared == compiled
    assert "hidden" not in shared[0]
    assert shared[0] == "Plain(a=1, b='x')"
    assert shared[3] == "own"
    assert shared[6] == "Node(value=1, children=[...])"
    # Every dataclass with a repr of its own making shares it; Own keeps its own.
    assert shares == [True, True, True, False, True, True, True, True, True, True]


def test_dokuend_makes_its_dataclasses_with_the_shared_repr() -> None:
    code = (
        "import dokuen.cli.dokuend, dokuen.daemon\n"
        "from dokuen.cli.sharedrepr import dataclass_repr\n"
        "from dokuen.settings import Settings\n"
        "from dokuen.supervise.formation import ProcessSpec\n"
        "from dokuen.cli.sharedrepr import frozen_setattr\n"
        "print(Settings.__repr__ is dataclass_repr, ProcessSpec.__repr__ is dataclass_repr,\n"
        "      ProcessSpec.__setattr__ is frozen_setattr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True", "True"]


FROZEN = """
import dataclasses, json
from dataclasses import dataclass, field

@dataclass(frozen=True)
class Point:
    x: int
    y: int = 0

@dataclass(frozen=True, slots=True)
class Slotted:
    x: int

@dataclass(frozen=True)
class Point3(Point):
    z: int = 0

class Loose(Point):  # not a dataclass: may take attributes of its own
    pass

@dataclass(frozen=True, eq=False)
class NoEq:
    x: int

def attempt(action):
    try:
        action()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"

p, s, p3, loose = Point(1), Slotted(2), Point3(1, 2, 3), Loose(4)
outcomes = [
    attempt(lambda: setattr(p, "x", 5)), attempt(lambda: setattr(p, "other", 5)),
    attempt(lambda: delattr(p, "y")), attempt(lambda: setattr(s, "x", 5)),
    attempt(lambda: delattr(s, "x")), attempt(lambda: setattr(p3, "z", 5)),
    attempt(lambda: setattr(p3, "x", 5)), attempt(lambda: setattr(loose, "x", 5)),
    attempt(lambda: setattr(loose, "other", 5)), attempt(lambda: delattr(loose, "other")),
    attempt(lambda: delattr(loose, "y")),
    repr(dataclasses.replace(p, x=9)), repr(p3), hash(Point(1, 2)) == hash(Point(1, 2)),
    Point(1, 2) == Point(1, 2), hash(NoEq(1)) != hash(NoEq(1)), repr(loose),
    {Point(1): "a"}[Point(1)],
]
print(json.dumps(outcomes))
"""


def frozen_outcomes(shared: bool) -> list[object]:
    first = "from dokuen.cli.sharedrepr import share_dataclass_repr\nshare_dataclass_repr()\n"
    code = (first if shared else "") + FROZEN
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    outcomes: list[object] = json.loads(done.stdout)
    return outcomes


def test_frozen_classes_refuse_what_they_refused_with_the_same_words() -> None:
    """The shared guards of frozen classes: fields and (on the class itself) any name
    refused, a plain subclass's own attributes allowed, hashing and equality untouched."""
    compiled = frozen_outcomes(shared=False)
    shared = frozen_outcomes(shared=True)
    assert shared == compiled
    assert shared[0] == "FrozenInstanceError: cannot assign to field 'x'"
    assert shared[2] == "FrozenInstanceError: cannot delete field 'y'"
    assert shared[8] == "ok"  # Loose's own attribute
    assert shared[7] == "FrozenInstanceError: cannot assign to field 'x'"
