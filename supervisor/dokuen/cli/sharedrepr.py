"""One ``__repr__`` for every dataclass the daemon makes, instead of one compiled for each;
and one ``__setattr__`` and ``__delattr__`` for every frozen one.

``dataclasses`` writes each class's ``__repr__`` as source and compiles it: a function, its
code object and the code's tables for every class, about 2.6 KiB each. dokuend makes over a
hundred dataclasses at start (its own and its libraries'), and their reprs are read only
when a log field or an error shows one: 0.2 MiB resident for the daemon's whole life
(docs/benchmarks.md, workload 3). :func:`share_dataclass_repr`, called by dokuend before it
imports anything that makes one, has ``dataclass`` make classes without it and give each
that wanted one :func:`dataclass_repr`, which writes the same text: the class's qualified
name and its fields that have ``repr=True``, each as its repr, ``...`` for an object
inside itself (tests/test_sharedrepr.py compares the two). A frozen class's two guards
(3.5 KiB a class) are replaced by :func:`frozen_setattr` and :func:`frozen_delattr`, which
refuse what they refused, with the same words. Every other method is still the one
``dataclasses`` writes.
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


def _guarded(instance: Any, method: str, name: str) -> Any:
    """The frozen class whose guard ``method`` is (the first in the instance's MRO that
    holds ours); raises FrozenInstanceError where the compiled guard did: the instance is
    of that very class, or ``name`` is one of its fields."""
    ours = frozen_setattr if method == "__setattr__" else frozen_delattr
    owner = next(c for c in type(instance).__mro__ if c.__dict__.get(method) is ours)
    if type(instance) is owner or name in {field.name for field in dataclasses.fields(owner)}:
        doing = "assign to" if method == "__setattr__" else "delete"
        raise dataclasses.FrozenInstanceError(f"cannot {doing} field {name!r}")
    return super(owner, instance)


def frozen_setattr(self: Any, name: str, value: Any) -> None:
    _guarded(self, "__setattr__", name).__setattr__(name, value)


def frozen_delattr(self: Any, name: str) -> None:
    _guarded(self, "__delattr__", name).__delattr__(name)


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
            if made.__dataclass_params__.frozen:  # its compiled guards go, once replaced
                made.__setattr__, made.__delattr__ = frozen_setattr, frozen_delattr
            return made

        return wrap if cls is None else wrap(cls)

    dataclass.shares_repr = True  # type: ignore[attr-defined]
    dataclass.__doc__ = original.__doc__
    dataclasses.dataclass = dataclass
