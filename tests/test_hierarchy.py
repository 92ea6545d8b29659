"""Finding the cgroup hierarchies and dokuend's own group in them, from /proc text."""

from pathlib import Path, PurePosixPath

from dokuen.isolate.cgroups import UNIFIED
from dokuen.isolate.hierarchy import (
    Mount,
    discover,
    own_directories,
    parse_membership,
    parse_mountinfo,
)

# This machine's kind: v1 controllers mounted apart, and an empty cgroup2 beside them.
HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_SELF = """\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/57a0
2:cpuacct:/
0::/
"""
# A systemd machine on v2 alone; and a container whose mount's root is its own group.
UNIFIED_ONLY = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
SERVICE_SELF = "0::/system.slice/dokuen.service\n"
CONTAINER = "30 23 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n"


def test_mounts_are_read_with_their_controllers() -> None:
    mounts = parse_mountinfo(HYBRID)
    assert [m.point.name for m in mounts] == [
        "cpuacct",
        "memory",
        "freezer",
        "pids",
        "systemd",
        "unified",
    ]
    assert mounts[1] == Mount(
        "cgroup",
        PurePosixPath("/sys/fs/cgroup/memory"),
        PurePosixPath("/"),
        frozenset({"rw", "memory"}),
    )
    assert mounts[-1].fstype == "cgroup2"


def test_membership_per_controller() -> None:
    membership = parse_membership(HYBRID_SELF + "1:cpu,cpuacct:/x\n")
    assert membership["memory"] == PurePosixPath("/process_api/57a0")
    assert membership[UNIFIED] == PurePosixPath("/")
    assert membership["cpu"] == membership["cpuacct"] == PurePosixPath("/x")


def test_own_directories_on_a_hybrid_machine() -> None:
    own = own_directories(parse_mountinfo(HYBRID), parse_membership(HYBRID_SELF))
    assert own == {
        "cpuacct": Path("/sys/fs/cgroup/cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory/process_api/57a0"),
        "freezer": Path("/sys/fs/cgroup/freezer"),
        "pids": Path("/sys/fs/cgroup/pids"),
        "name=systemd": Path("/sys/fs/cgroup/systemd"),  # named, unused
        UNIFIED: Path("/sys/fs/cgroup/unified"),
    }


def test_own_directory_of_a_service_on_v2() -> None:
    own = own_directories(parse_mountinfo(UNIFIED_ONLY), parse_membership(SERVICE_SELF))
    assert own == {UNIFIED: Path("/sys/fs/cgroup/system.slice/dokuen.service")}


def test_a_container_sees_its_group_as_the_mount_root() -> None:
    inside = own_directories(parse_mountinfo(CONTAINER), parse_membership("0::/docker/abc/x\n"))
    assert inside == {UNIFIED: Path("/sys/fs/cgroup/x")}
    # A group outside what is mounted cannot be reached: no directory, not a wrong one.
    assert own_directories(parse_mountinfo(CONTAINER), parse_membership("0::/other\n")) == {}


def test_off_is_off() -> None:
    assert discover("off", Path("/nowhere")) == (None, "off (DOKUEN_CGROUPS=off)")
