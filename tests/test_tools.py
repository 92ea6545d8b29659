"""Where builds find uv: DOKUEN_UV, dokuend's own, PATH; and a copy they can reach."""

import os
import stat
from pathlib import Path

from dokuen.deploy.tools import find_uv, reachable_uv


def test_uv_is_the_setting_then_dokuens_own_then_the_build_path(tmp_path: Path) -> None:
    assert find_uv("/opt/uv/bin/uv", "/nowhere") == "/opt/uv/bin/uv"
    assert find_uv("off", "/nowhere") is None
    found = find_uv(None, "/nowhere")  # uv is a dependency of Dokuen: beside dokuend
    assert found is not None
    assert Path(found).name == "uv"
    assert os.access(found, os.X_OK)


def test_a_uv_builds_cannot_reach_is_copied_where_they_can(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    uv = private / "uv"
    uv.write_text("#!/bin/sh\necho uv 1\n")
    uv.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    copy = Path(reachable_uv(str(uv), home))
    assert copy == home / "tools" / "uv"
    assert copy.read_text() == uv.read_text()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o755
    assert reachable_uv(str(uv), home) == str(copy)  # unchanged: not copied again
    uv.write_text("#!/bin/sh\necho uv 2 and longer\n")
    assert Path(reachable_uv(str(uv), home)).read_text() == uv.read_text()


def test_the_copy_is_reachable_under_the_services_umask(tmp_path: Path) -> None:
    """The unit runs dokuend with UMask=0027: a directory made with mode 0755 comes out
    0750, and no build uid could pass it to the uv inside."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    uv = private / "uv"
    uv.write_text("#!/bin/sh\n")
    uv.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    old = os.umask(0o027)
    try:
        copy = Path(reachable_uv(str(uv), home))
    finally:
        os.umask(old)
    assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o755
    assert stat.S_IMODE(copy.stat().st_mode) == 0o755
