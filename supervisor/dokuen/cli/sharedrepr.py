"""One ``__repr__`` for every dataclass the daemon makes, instead of one compiled for each.

``dataclasses`` writes each class's ``__repr__`` as source and compiles it: a function, its
code object and the code's tables for every class, about 2.6 KiB each. dokuend makes over a
hundred dataclasses at start (its own and its libraries'), and their reprs are read only
when a log field or an error shows one: 0.2 MiB resident for the daemon's whole life
(docs/benchmarks.md, workload 3). :func:`share_dataclass_repr`, called by dokuend before it
imports anything that makes one, has ``dataclass`` make classes without it and give each
that wanted one :func:`dataclass_repr`, which writes the same text: the class's qualified
name and its fields that have ``repr=True``, each as its repr, ``...`` for an object
inside itself (tests/test_sharedrepr.py compares the two). Every other method is still
the one ``dataclasses`` writes.
"""

import dataclasses
import reprlib
from typing import Any


@reprlib.recursive_repr()
def dataclass_repr(self: Any) -> str:
    """What ``dataclasses`` would have compiled for the instance's class."""
    shown = ", ".join(
        f"{field.name}={getattr(self, field.name)!r}"
        for field in dataclasses.fields(self)
        if field.repr
    )
    return f"{self.__class__.__qualname__}({shown})"


def share_dataclass_repr() -> None:
    """From now on, ``dataclasses.dataclass`` gives each class :func:`dataclass_repr`
    where it would have written one (``repr=True``, no ``__repr__`` of the class's own)."""
    original = dataclasses.dataclass
    if getattr(original, "shares_repr", False):
        return

    def dataclass(cls: Any = None, /, *, repr: bool = True, **options: Any) -> Any:
        def wrap(cls: Any) -> Any:
            made = original(cls, repr=False, **options)
            if repr and "__repr__" not in cls.__dict__:
                made.__repr__ = dataclass_repr
            return made

        return wrap if cls is None else wrap(cls)

    dataclass.shares_repr = True  # type: ignore[attr-defined]
    dataclass.__doc__ = original.__doc__
    dataclasses.dataclass = dataclass
