"""errors.explain: any exception, an ExceptionGroup from a task group included, as the one
line a person reads."""

import errno
import os

import pytest

from dokuen.errors import DokuenError, NotFound, explain, leaf


def test_the_first_dokuen_error_of_a_nested_group_is_the_one_told() -> None:
    group = ExceptionGroup(
        "outer",
        [ValueError("a bug"), ExceptionGroup("inner", [OSError(errno.EIO, "I/O"), NotFound("x")])],
    )
    assert isinstance(leaf(group), NotFound)
    assert explain(group) == "x"


def test_without_a_dokuen_error_the_os_error_is_told_before_a_bug() -> None:
    failed = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/srv/home/apps/blog/env")
    group = ExceptionGroup("g", [KeyError("k"), failed])
    assert explain(group) == (
        "/srv/home/apps/blog/env: No space left on device "
        "(the disk is full: free space on it, then try again)"
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (DokuenError("app 'x' has no release"), "app 'x' has no release"),
        (OSError(errno.EMFILE, "Too many open files"), "Too many open files (dokuend has too"),
        (OSError(errno.EIO, "Input/output error", "/d/f"), "/d/f: Input/output error (an"),
        (OSError(errno.EXDEV, "Invalid cross-device link"), "Invalid cross-device link"),
        (RuntimeError("two\nlines"), "internal error: RuntimeError: two lines (a bug in dokuen"),
    ],
)
def test_explain_is_one_line_with_the_cause_and_the_fix(exc: Exception, expected: str) -> None:
    text = explain(exc)
    assert text.startswith(expected)
    assert "\n" not in text
