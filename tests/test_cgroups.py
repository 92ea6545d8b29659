"""Groups: their names and counters (pure), and, as root on this machine's real cgroups, a
process placed in one before it runs, and a kill of a whole group that nothing escapes."""

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from dokuen.isolate.cgroups import UNIFIED, Cgroups, Layout, home_id, parse_counters
from dokuen.isolate.hierarchy import discover

V1 = Layout(
    1,
    {c: Path(f"/cg/{c}/own") for c in ("memory", "pids", "freezer")},
    frozenset({"memory", "pids", "freezer"}),
)


def test_names_of_groups() -> None:
    cgroups = Cgroups(V1, Path("/var/lib/dokuen"), "/usr/bin/setpriv")
    root = f"dokuen-{home_id(Path('/var/lib/dokuen'))}"
    assert cgroups.app("blog").name == PurePosixPath(root, "blog")
    first, second = cgroups.process("blog", "web.1"), cgroups.process("blog", "web.1")
    assert first != second  # a replacement starts beside the process it replaces
    assert first.name.parent == cgroups.app("blog").name
    assert cgroups.build("blog").name.parent == PurePosixPath(root)
    assert home_id(Path("/a")) != home_id(Path("/b"))


def test_each_file_lives_in_its_controllers_hierarchy() -> None:
    group = Cgroups(V1, Path("/h"), None).app("blog")
    assert group.file("memory.limit_in_bytes").parts[:4] == ("/", "cg", "memory", "own")
    assert group.file("pids.max").parts[:4] == ("/", "cg", "pids", "own")
    assert group.procs_files() == [
        str(Path(f"/cg/{c}/own") / group.name / "cgroup.procs")
        for c in ("freezer", "memory", "pids")
    ]
    v2 = Layout(2, {UNIFIED: Path("/cg2/own")}, frozenset())
    assert Cgroups(v2, Path("/h"), None).app("b").file("pids.max").parts[:3] == ("/", "cg2", "own")


def test_entry_drops_to_the_user_after_entering() -> None:
    cgroups = Cgroups(V1, Path("/h"), "/usr/bin/setpriv")
    group = cgroups.app("blog")
    argv = cgroups.entry(group, 2000)
    assert argv[-4:] == ["/usr/bin/setpriv", "--reuid=2000", "--regid=2000", "--clear-groups"]
    assert argv[argv.index("--") - 1] == group.procs_files()[-1]
    assert "setpriv" not in " ".join(cgroups.entry(group, None))
    with pytest.raises(OSError, match="setpriv is not installed"):
        Cgroups(V1, Path("/h"), None).entry(group, 2000)


def test_counters() -> None:
    assert parse_counters("usage_usec 1500000\nuser_usec 3\n") == {
        "usage_usec": 1500000,
        "user_usec": 3,
    }
    assert parse_counters("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")["oom_kill"] == 2
    assert parse_counters("junk\nkey notanumber\n") == {}


@pytest.fixture(params=["v1", "v2"])
def cgroups(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cgroups]:
    found, why = discover(str(request.param), tmp_path)
    if os.geteuid() != 0 or found is None:
        pytest.skip(f"no cgroup {request.param} to use here: {why}")
    yield found
    assert found.clear()


def test_a_process_enters_its_group_before_it_runs(cgroups: Cgroups) -> None:
    group = cgroups.process("blog", "web.1")
    group.create()
    argv = [*cgroups.entry(group, 65534), "/bin/sh", "-c", "id -u; cat /proc/self/cgroup"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "65534"
    assert f"/{group.name}\n" in out  # as the very program, not only its parent
    assert group.remove()
    assert not any(d.exists() for d in group.directories())


def _commands(pids: set[int]) -> list[str]:
    names = []
    for pid in pids:
        try:
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            names.append("gone")
    return sorted(names)


def test_a_kill_reaches_every_process_however_it_hid(cgroups: Cgroups) -> None:
    group = cgroups.process("blog", "worker.1")
    group.create()
    hider = "(setsid sleep 600 &); setsid sleep 600 & exec sleep 600"
    child = subprocess.Popen([*cgroups.entry(group, None), "/bin/sh", "-c", hider])
    try:
        # The subshell and the shells before their exec come and go: wait for the three sleeps.
        deadline = time.monotonic() + 10
        while _commands(group.pids()) != ["sleep"] * 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _commands(group.pids()) == ["sleep"] * 3
        assert not group.remove()  # not while processes remain
        group.kill()
        assert child.wait(5) == -9
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 10
    while group.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert group.pids() == set()
    assert group.remove()


def test_usage_and_limits_where_the_controllers_are(cgroups: Cgroups) -> None:
    group = cgroups.app("blog")
    group.create()
    problems = group.set_limits(64 << 20, 32)
    cpu, memory = group.usage()
    assert cpu is not None  # cpu.stat (v2) or cpuacct (v1 here)
    if {"memory", "pids"} <= cgroups.layout.controllers:
        assert problems == []
        assert group.file("pids.max").read_text().strip() == "32"
        assert memory is not None
        assert group.set_limits(None, None) == []
        assert group.file("pids.max").read_text().strip() == "max"
    else:
        assert memory is None
    assert group.oom_kills() == 0


def test_clearing_all_but_the_adopted_groups(cgroups: Cgroups, tmp_path: Path) -> None:
    """What a new dokuend does at start: every group emptied and removed but those of the
    processes it adopted, and new groups numbered past them (never the same name twice)."""
    kept, other = cgroups.process("blog", "web.1"), cgroups.process("blog", "web.2")
    build, gone_app = cgroups.build("blog"), cgroups.process("gone", "web.1")
    children = []
    for group in (kept, other, build, gone_app):
        group.create()
        children.append(subprocess.Popen([*cgroups.entry(group, None), "sleep", "600"]))
    try:
        deadline = time.monotonic() + 10
        while not all(g.pids() for g in (kept, other, build, gone_app)):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # A new dokuend's own Cgroups, whose count of lives starts again from 0.
        fresh = Cgroups(cgroups.layout, cgroups.home, cgroups.setpriv)
        assert fresh.clear_except({str(kept.name)})
        for child in children[1:]:
            assert child.wait(5) == -9
        assert children[0].poll() is None  # the adopted one runs on
        assert kept.pids() == {children[0].pid}
        for group in (other, build, gone_app):
            assert not any(d.exists() for d in group.directories())
        assert int(fresh.process("blog", "web.1").name.name.rsplit(".", 1)[1]) > int(
            kept.name.name.rsplit(".", 1)[1]
        )
    finally:
        for child in children:
            child.kill()
            child.wait()
