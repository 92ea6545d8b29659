"""Carrying out install steps for real in a temporary directory, and choosing the service
for this machine. (Enabling a service is left to the end-to-end tests' error path: this
machine's systemd, if any, is never touched.)"""

import os
import stat
import sys
from pathlib import Path

import pytest

from dokuen.errors import ServiceError
from dokuen.service import install, launchd, systemd
from dokuen.service.steps import Account, Command, Directory, File, OnFailure, Removal, Step

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def run(steps: list[Step]) -> list[str]:
    said: list[str] = []
    install.execute(steps, said.append, ENV)
    return said


def test_files_directories_and_removals(tmp_path: Path) -> None:
    unit = tmp_path / "etc" / "dokuend.service"
    state = tmp_path / "state"
    said = run([File(unit, "[Unit]\n", 0o640), Directory(state / "deep", 0o700)])
    assert unit.read_text() == "[Unit]\n"
    assert stat.S_IMODE(unit.stat().st_mode) == 0o640
    assert stat.S_IMODE((state / "deep").stat().st_mode) == 0o700
    assert said == [f"wrote {unit}", f"made {state / 'deep'}"]
    assert run([File(unit, "new\n")]) == [f"wrote {unit}"]  # replaced whole
    assert unit.read_text() == "new\n"
    assert list(unit.parent.iterdir()) == [unit]  # no staging file left
    assert run([Directory(state)]) == []  # already there: untouched
    said = run([Removal(unit), Removal(unit), Removal(state, tree=True), Removal(state, tree=True)])
    assert said == [f"removed {unit}", f"removed {state} and everything in it"]
    assert not unit.exists()
    assert not state.exists()


def test_a_command_that_works() -> None:
    assert run([Command(("true",))]) == ["ran true"]


def test_a_failed_command_stops_everything_after_it(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match=r"sh -c 'echo no way >&2; exit 3' failed \(exit 3\)"):
        run([Command(("sh", "-c", "echo no way >&2; exit 3")), File(tmp_path / "f", "")])
    assert not (tmp_path / "f").exists()


def test_a_failure_can_be_a_warning_or_nothing() -> None:
    said = run([Command(("false",), OnFailure.WARN), Command(("false",), OnFailure.IGNORE)])
    assert said == ["warning: false failed (exit 1): no message"]


def test_a_missing_tool_stops_it_before_anything_is_done(tmp_path: Path) -> None:
    steps: list[Step] = [
        Directory(tmp_path / "state"),
        File(tmp_path / "x.plist", ""),
        Command(("dokuen-no-such-tool", "bootstrap")),
    ]
    with pytest.raises(ServiceError, match="dokuen-no-such-tool is not installed: install it"):
        run(steps)
    assert list(tmp_path.iterdir()) == []


def test_an_account_that_is_already_as_wanted_runs_nothing() -> None:
    # root exists and "dokuen-nobody" does not: neither command may run (they would fail).
    assert run([Account("root", ("false",), create=True)]) == []
    assert run([Account("dokuen-nobody", ("false",), create=False)]) == []


def test_the_service_for_this_machine(tmp_path: Path) -> None:
    dokuend = (Path(sys.executable).parent / "dokuend").resolve()
    unit = install.describe("systemd", False, None, {})
    assert unit == systemd.Unit(dokuend, Path("/var/lib/dokuen"), Path("/etc/systemd/system"))
    environ = {"DOKUEN_HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "c")}
    assert install.describe("systemd", True, None, environ) == systemd.Unit(
        dokuend, tmp_path / "home", tmp_path / "c" / "systemd" / "user", per_user=True
    )
    job = install.describe("launchd", True, tmp_path, environ)
    assert isinstance(job, launchd.Job)
    assert (job.home, job.directory, job.domain) == (
        tmp_path / "home",
        tmp_path,
        f"gui/{os.getuid()}",
    )
    daemon = install.describe("launchd", False, None, {})
    assert isinstance(daemon, launchd.Job)
    assert daemon.domain == "system"


def test_default_kind() -> None:
    assert install.default_kind("darwin") == "launchd"
    assert install.default_kind("linux") == "systemd"
