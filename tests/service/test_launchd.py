"""The launchd plist: golden files, plistlib reads it with the keys launchd needs, and the
steps that load and unload it."""

import plistlib
from pathlib import Path

import pytest

from dokuen.resources import shipped
from dokuen.service.launchd import (
    DAEMON_DIR,
    LABEL,
    STATE_DIR,
    SYSTEM_LOG,
    TEMPLATE,
    Job,
    install_steps,
    render_plist,
    uninstall_steps,
)
from dokuen.service.steps import Command, Directory, File, OnFailure, Removal
from tests.test_nginx import golden

DOKUEND = Path("/opt/dokuen/bin/dokuend")
DAEMON = Job(DOKUEND, STATE_DIR, SYSTEM_LOG, DAEMON_DIR, "system")
AGENT = Job(
    DOKUEND,
    Path("/Users/ada/.local/share/dokuen"),
    Path("/Users/ada/Library/Logs/dokuend.log"),
    Path("/Users/ada/Library/LaunchAgents"),
    "gui/501",
)


def rendered(job: Job) -> str:
    return render_plist((shipped("launchd") / TEMPLATE).read_text(), job)


def test_launch_daemon() -> None:
    golden("com.dokuen.dokuend.plist", rendered(DAEMON))


def test_launch_agent() -> None:
    golden("com.dokuen.dokuend-agent.plist", rendered(AGENT))


@pytest.mark.parametrize("job", [DAEMON, AGENT], ids=["daemon", "agent"])
def test_plistlib_reads_it_with_the_keys_launchd_needs(job: Job) -> None:
    plist = plistlib.loads(rendered(job).encode())
    assert plist["Label"] == LABEL
    assert plist["ProgramArguments"] == [str(DOKUEND)]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # restarted unless it stopped clean
    assert plist["ThrottleInterval"] > 0
    assert plist["ExitTimeOut"] >= 30  # time for dokuend to stop its apps
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == str(job.log)
    assert plist["EnvironmentVariables"]["DOKUEN_HOME"] == str(job.home)
    assert plist["WorkingDirectory"] == str(job.home)
    assert "/opt/homebrew/bin" in plist["EnvironmentVariables"]["PATH"].split(":")
    assert plist["SoftResourceLimits"]["NumberOfFiles"] >= 65536


def test_installing_unloads_an_earlier_job_then_loads_this_one() -> None:
    assert install_steps(DAEMON, "text") == [
        Directory(STATE_DIR, 0o711),
        File(DAEMON_DIR / f"{LABEL}.plist", "text"),
        Command(("launchctl", "bootout", f"system/{LABEL}"), OnFailure.IGNORE),
        Command(("launchctl", "enable", f"system/{LABEL}")),
        Command(("launchctl", "bootstrap", "system", str(DAEMON_DIR / f"{LABEL}.plist"))),
    ]
    assert install_steps(AGENT, "text")[-1] == Command(
        ("launchctl", "bootstrap", "gui/501", str(AGENT.path))
    )


def test_uninstalling_keeps_the_state_unless_purged() -> None:
    kept = [
        Command(("launchctl", "bootout", f"gui/501/{LABEL}"), OnFailure.WARN),
        Removal(AGENT.path),
    ]
    assert uninstall_steps(AGENT, purge=False) == kept
    assert uninstall_steps(AGENT, purge=True) == [*kept, Removal(AGENT.home, tree=True)]
