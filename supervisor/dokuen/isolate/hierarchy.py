"""Where the cgroup hierarchies are mounted, which group dokuend is in, and which way
(v2, v1 or none) it controls its processes with: ``discover``, from /proc/self/mountinfo
and /proc/self/cgroup."""

import contextlib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dokuen.isolate.cgroups import UNIFIED, V1_MEASURING, V1_NEEDED, V2_LIMITING, Cgroups, Layout


def _controllers(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


@dataclass(frozen=True)
class Mount:
    fstype: str
    point: PurePosixPath
    root: PurePosixPath  # the directory of the hierarchy that is mounted there
    options: frozenset[str]  # super options: a v1 hierarchy's controllers are among them


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts of /proc/self/mountinfo."""
    mounts = []
    for line in text.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            point = fields[4].replace("\\040", " ")
            options = frozenset(tail[2].split(","))
            mounts.append(Mount(tail[0], PurePosixPath(point), PurePosixPath(fields[3]), options))
    return mounts


def parse_membership(text: str) -> dict[str, PurePosixPath]:
    """/proc/self/cgroup: each v1 controller (and ``unified`` for v2) -> our group's path."""
    found = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [UNIFIED]:
                found[controller] = PurePosixPath(parts[2])
    return found


def own_directories(
    mounts: list[Mount], membership: Mapping[str, PurePosixPath]
) -> dict[str, Path]:
    """Where our own group is, per controller (``unified`` for v2): the mount point plus our
    path below the mounted root (in a container the root may be our group itself)."""
    found: dict[str, Path] = {}
    for mount in mounts:
        keys = [UNIFIED] if mount.fstype == "cgroup2" else sorted(mount.options & membership.keys())
        for key in keys:
            path = membership.get(key)
            if path is None or key in found:
                continue
            with contextlib.suppress(ValueError):
                found[key] = Path(mount.point / path.relative_to(mount.root))
    return found


def off(reason: str) -> dict[str, object]:
    """``status`` of a daemon without cgroups."""
    return {"mode": "off", "groups": [], "controllers": [], "problem": reason}


def discover(mode: str, home: Path) -> tuple[Cgroups | None, str | None]:
    """The cgroups dokuend can use under ``mode`` (``DOKUEN_CGROUPS``), or None and why not.

    ``auto`` takes v2 when its subtree may limit memory and processes, else v1 when the
    memory, pids and freezer hierarchies are there, else v2 for kills alone.
    """
    if mode == "off":
        return None, "off (DOKUEN_CGROUPS=off)"
    try:
        mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
        membership = parse_membership(Path("/proc/self/cgroup").read_text())
    except OSError:
        return None, "this system has no cgroups (not Linux)"
    own = own_directories(mounts, membership)
    setpriv = shutil.which("setpriv") or next(
        (p for p in ("/usr/bin/setpriv", "/bin/setpriv") if os.access(p, os.X_OK)), None
    )
    v1 = _v1_layout(own)
    v2 = _v2_layout(own)
    if mode == "v1" or (mode == "auto" and v1 and not (v2 and set(V2_LIMITING) <= v2.controllers)):
        chosen = v1
    else:
        chosen = v2 if mode == "v2" or v2 else v1
    if chosen is None:
        wanted = "" if mode == "auto" else f" {mode}"
        return None, (
            f"no writable cgroup{wanted} hierarchy for dokuend (run it as root, or as a "
            "service with Delegate=yes)"
        )
    if os.geteuid() == 0 and setpriv is None:
        return None, "setpriv is not installed (apt install util-linux)"
    return Cgroups(chosen, home, setpriv), None


def _v1_layout(own: Mapping[str, Path]) -> Layout | None:
    if not all(c in own and os.access(own[c], os.W_OK) for c in V1_NEEDED):
        return None
    base = {c: own[c] for c in (*V1_NEEDED, *V1_MEASURING) if c in own}
    return Layout(1, base, frozenset(base))


def _v2_layout(own: Mapping[str, Path]) -> Layout | None:
    """The v2 layout; when the group dokuend is in may pass memory and pids on, dokuend
    moves into a leaf ``dokuend`` of it first (v2 lets only leaves hold processes)."""
    directory = own.get(UNIFIED)
    if directory is None or not os.access(directory, os.W_OK):
        return None
    if directory.name == "dokuend":  # moved there by an earlier start (or the unit)
        directory = directory.parent
    available = _controllers(directory / "cgroup.controllers") & set(V2_LIMITING)
    enabled = _controllers(directory / "cgroup.subtree_control")
    if available - enabled:
        try:
            leaf = directory / "dokuend"
            leaf.mkdir(exist_ok=True)
            (leaf / "cgroup.procs").write_text(str(os.getpid()))
            enable = " ".join(f"+{c}" for c in sorted(available))
            (directory / "cgroup.subtree_control").write_text(enable)
        except OSError:  # other processes share our group: kills work, limits do not
            available = enabled & available
    return Layout(2, {UNIFIED: directory}, frozenset(available))
