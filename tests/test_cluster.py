"""The managed cluster's checks that need no PostgreSQL: who may reach its directory."""

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from dokuen.data.cluster import unreachable_parent


@pytest.mark.skipif(os.geteuid() != 0, reason="needs another user to look through")
def test_unreachable_parent() -> None:
    nobody = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="dokuen-reach-"))  # pytest's own are closed to others
    try:
        top.chmod(0o755)
        closed = top / "closed"
        (closed / "inner").mkdir(parents=True)
        closed.chmod(0o700)
        assert unreachable_parent(closed / "inner" / "run", nobody) == closed
        closed.chmod(0o711)  # passing through is enough
        assert unreachable_parent(closed / "inner" / "run", nobody) is None
    finally:
        shutil.rmtree(top)
