"""The copy of the bundled buildpacks that builds of their own uid use."""

from pathlib import Path

from dokuen.deploy.tools import reachable_buildpacks
from dokuen.resources import shipped


def test_the_bundled_buildpacks_are_copied_once_into_the_home(tmp_path: Path) -> None:
    copy = reachable_buildpacks(tmp_path)
    assert copy == tmp_path / "buildpacks"
    detect = copy / "python" / "bin" / "detect"
    assert detect.read_bytes() == (shipped("buildpacks") / "python/bin/detect").read_bytes()
    assert detect.stat().st_mode & 0o111 == 0o111  # still executable by anyone
    marker = (copy / ".installed-from").stat().st_mtime_ns
    assert reachable_buildpacks(tmp_path) == copy
    assert (copy / ".installed-from").stat().st_mtime_ns == marker  # not copied again
    (copy / ".installed-from").write_text("an older install\n")
    reachable_buildpacks(tmp_path)
    assert (copy / ".installed-from").read_text() != "an older install\n"
    assert not (tmp_path / ".buildpacks.new").exists()
