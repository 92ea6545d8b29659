"""The systemd unit: golden files, `systemd-analyze verify` on the unit rendered for the
installed dokuend, and the steps that install and remove it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dokuen.resources import shipped
from dokuen.service.steps import Account, Command, File, OnFailure, Removal
from dokuen.service.systemd import (
    CREATE_USER,
    STATE_DIR,
    SYSTEM_UNIT_DIR,
    Unit,
    install_steps,
    render_unit,
    uninstall_steps,
)
from tests.test_nginx import golden

DOKUEND = Path("/opt/dokuen/bin/dokuend")
SYSTEM = Unit(DOKUEND, STATE_DIR, SYSTEM_UNIT_DIR)
PER_USER = Unit(
    DOKUEND,
    Path("/home/ada/.local/share/dokuen"),
    Path("/home/ada/.config/systemd/user"),
    per_user=True,
)


def rendered(unit: Unit) -> str:
    return render_unit((shipped("systemd") / unit.template).read_text(), unit)


def test_system_unit() -> None:
    golden("dokuend.service", rendered(SYSTEM))


def test_user_unit() -> None:
    golden("dokuend-user.service", rendered(PER_USER))


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_system_unit_has_what_the_service_needs() -> None:
    unit = directives(rendered(SYSTEM))
    assert unit["Type"] == ["notify"]
    assert unit["ExecStart"] == [str(DOKUEND)]
    assert unit["ExecReload"] == ["/bin/kill -USR2 $MAINPID"]  # re-exec in place
    assert unit["KillMode"] == ["process"]  # a crashed dokuend leaves the apps to adopt
    assert unit["Restart"] == ["on-failure"]
    assert unit["StateDirectory"] == ["dokuen"]
    assert unit["Environment"] == ["DOKUEN_HOME=/var/lib/dokuen"]
    # Root, so that every app runs as a uid of its own; what root may do is bounded.
    assert "User" not in unit
    assert "Group" not in unit
    assert unit["Delegate"] == ["yes"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["StateDirectoryMode"] == ["0711"]
    bounded = set(unit["CapabilityBoundingSet"][0].split())
    assert {"CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_NET_BIND_SERVICE"} <= bounded
    assert not bounded & {"CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_NET_ADMIN", "CAP_SYS_RAWIO"}
    assert "AmbientCapabilities" not in unit  # apps get no capability
    assert "ProtectControlGroups" not in unit  # the delegated cgroups are dokuend's to manage
    assert int(unit["LimitNOFILE"][0]) >= 65536
    assert unit["WatchdogSec"]
    assert unit["TimeoutStopSec"]
    assert "MemoryDenyWriteExecute" not in unit  # it breaks JIT runtimes


@pytest.mark.parametrize("unit", [SYSTEM, PER_USER], ids=["system", "user"])
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_unit_for_the_installed_dokuend(
    unit: Unit, tmp_path: Path
) -> None:
    # verify checks that ExecStart exists and is executable: the real dokuend of this install.
    dokuend = (Path(sys.executable).parent / "dokuend").resolve()
    real = Unit(dokuend, unit.home, tmp_path, unit.per_user)
    real.path.write_text(rendered(real))
    scope = ["--user"] if unit.per_user else []
    runtime = tmp_path / "run"  # --user needs a runtime directory, which a container lacks
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        ["systemd-analyze", *scope, "verify", str(real.path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
    )
    # verify exits 0 even for unknown keys: it only says so, naming the file and the line.
    complaints = [line for line in result.stderr.splitlines() if real.path.name in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []


def test_installing_asks_systemd_before_making_the_user() -> None:
    steps = install_steps(SYSTEM, "text")
    assert steps == [
        File(SYSTEM_UNIT_DIR / "dokuend.service", "text"),
        Command(("systemctl", "daemon-reload")),
        Account("dokuen", CREATE_USER, create=True),
        Command(("systemctl", "enable", "--now", "dokuend.service")),
    ]
    assert CREATE_USER[0] == "useradd"
    assert "--system" in CREATE_USER


def test_a_user_unit_makes_no_account_and_talks_to_the_user_manager() -> None:
    assert install_steps(PER_USER, "text") == [
        File(PER_USER.directory / "dokuend.service", "text"),
        Command(("systemctl", "--user", "daemon-reload")),
        Command(("systemctl", "--user", "enable", "--now", "dokuend.service")),
    ]


def test_uninstalling_keeps_the_state_unless_purged() -> None:
    kept = uninstall_steps(SYSTEM, purge=False)
    assert kept == [
        Command(("systemctl", "disable", "--now", "dokuend.service"), OnFailure.WARN),
        Removal(SYSTEM_UNIT_DIR / "dokuend.service"),
        Command(("systemctl", "daemon-reload"), OnFailure.WARN),
    ]
    purged = uninstall_steps(SYSTEM, purge=True)
    assert purged[len(kept) :] == [
        Removal(STATE_DIR, tree=True),
        Account("dokuen", ("userdel", "dokuen"), create=False),
    ]
    assert uninstall_steps(PER_USER, purge=True)[-1] == Removal(PER_USER.home, tree=True)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
@pytest.mark.parametrize(("caps", "port"), [(True, "80"), (False, "8080")])
def test_the_units_capability_makes_port_80_the_default(caps: bool, port: str) -> None:
    # As the unit runs it: an unprivileged user with CAP_NET_BIND_SERVICE, ambient.
    grant = ["--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"] if caps else []
    code = "from dokuen.settings import load_settings; print(load_settings({}).listen_port)"
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *grant]
    result = subprocess.run(
        [*nobody, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    assert result.stdout.strip() == port, result.stderr
