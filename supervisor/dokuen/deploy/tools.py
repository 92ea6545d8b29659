"""What builds are given besides the app: the bundled buildpacks and the uv that installs
Python apps, each where a build of its own uid can reach it."""

import os
import shutil
import stat
import sys
from pathlib import Path

from dokuen.resources import shipped


def reachable_buildpacks(home: Path) -> Path:
    """The bundled buildpacks where builds of their own uid reach them: a copy under
    ``home`` (dokuend may be installed in a private directory, like root's home), renewed
    when the installed ones change."""
    source = shipped("buildpacks")
    stamp = f"{source}\n{max(p.stat().st_mtime_ns for p in source.rglob('*'))}\n"
    copy = home / "buildpacks"
    if (copy / ".installed-from").is_file() and (copy / ".installed-from").read_text() == stamp:
        return copy
    staging = home / ".buildpacks.new"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    (staging / ".installed-from").write_text(stamp)
    shutil.rmtree(copy, ignore_errors=True)
    staging.rename(copy)
    return copy


def find_uv(configured: str | None, path: str) -> str | None:
    """The uv builds install Python apps with: ``DOKUEN_UV``, else the one installed beside
    dokuend (it is a dependency of Dokuen), else the first on the build's PATH."""
    if configured:
        return configured if configured != "off" else None
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("uv", path=path)


def reachable_uv(uv: str, home: Path) -> str:
    """``uv`` where builds of their own uid can run it: a copy under ``home`` when the
    original lies in a directory they cannot reach (dokuend in root's home, say), renewed
    when the original changes."""
    source = Path(uv)
    info = source.stat()
    if _reachable_by_others(source):
        return uv
    tools = home / "tools"
    tools.mkdir(exist_ok=True)
    tools.chmod(0o755)  # not mkdir's mode: the service's UMask=0027 would make it 0750
    copy = tools / "uv"
    stamp = tools / "uv.installed-from"
    mark = f"{source}\n{info.st_mtime_ns} {info.st_size}\n"
    if not (copy.is_file() and stamp.is_file() and stamp.read_text() == mark):
        staging = tools / ".uv.new"
        shutil.copyfile(source, staging)
        staging.chmod(0o755)
        staging.rename(copy)
        stamp.write_text(mark)
    return str(copy)


def _reachable_by_others(path: Path) -> bool:
    if not path.stat().st_mode & stat.S_IXOTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)
