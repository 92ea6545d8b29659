"""Shared test setup: async tests run on anyio's asyncio backend with asyncio's own loop, as
dokuend does."""

import signal
from typing import Any

import pytest

# A suite started in the background of a non-interactive shell (`.ci/run &`) inherits
# SIGINT ignored, and so would every dokuenctl a test interrupts with it (a Ctrl-C's
# "interrupted" line, tests/e2e/test_build.py and test_lifecycle.py): Python's own handler
# here, which a child's exec turns back into the default.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "asyncio", {"use_uvloop": False}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the costly tests first: those marked slow, then the end-to-end ones, then the rest,
    each in collection order. pytest-xdist's work stealing (bin/test) takes from the end of a
    worker's queue, so the last tests to run are short and both workers finish together."""

    def cost_class(item: pytest.Item) -> int:
        if item.get_closest_marker("slow"):
            return 0
        return 1 if item.nodeid.startswith("tests/e2e/") else 2

    items.sort(key=cost_class)
