"""dokuend under systemd, the pure half: the unit rendered from ``systemd/`` and the steps
that install or remove it (install.py carries them out)."""

from dataclasses import dataclass
from pathlib import Path

from dokuen.service.account import SERVICE_GROUP, SERVICE_USER
from dokuen.service.steps import Account, Command, File, OnFailure, Removal, Step
from dokuen.service.template import check_path, render

UNIT = "dokuend.service"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
# StateDirectory=dokuen: systemd makes it and gives it to the service's user before start.
STATE_DIR = Path("/var/lib/dokuen")

# The service's user is also the one `git push dokuen@HOST:APP` logs in as over ssh, where
# the forced command runs through the login shell: so a real shell, no password, no home
# of its own but the state.
CREATE_USER = (
    "useradd",
    "--system",
    "--user-group",
    "--home-dir",
    str(STATE_DIR),
    "--no-create-home",
    "--shell",
    "/bin/sh",
    "--comment",
    "Dokuen apps",
    SERVICE_USER,
)


@dataclass(frozen=True)
class Unit:
    """One systemd unit for dokuend: the system's (``/etc/systemd/system``, run as root so
    that each app runs as a uid of its own) or, ``per_user``, a user unit of whoever
    installs it (every app then runs as that user)."""

    dokuend: Path  # the installed dokuend, absolute
    home: Path  # DOKUEN_HOME: STATE_DIR for the system's unit
    directory: Path  # where the unit file goes
    per_user: bool = False

    @property
    def template(self) -> str:
        """The template's file name under ``systemd/``."""
        return "dokuend-user.service" if self.per_user else "dokuend.service"

    @property
    def path(self) -> Path:
        return self.directory / UNIT


def render_unit(template: str, unit: Unit) -> str:
    """The unit text. Raises ServiceError for a path that cannot go into it unquoted."""
    return render(
        template,
        {
            "dokuend": check_path(unit.dokuend, "dokuend"),
            "home": check_path(unit.home, "the state directory"),
            "user": SERVICE_USER,
            "group": SERVICE_GROUP,
        },
    )


def _systemctl(unit: Unit, *args: str) -> tuple[str, ...]:
    return ("systemctl", *(("--user",) if unit.per_user else ()), *args)


def install_steps(unit: Unit, text: str) -> list[Step]:
    """Write the unit, make systemd read it, create the service's user, enable and start.

    systemd is asked first, so a machine without it fails before any account is made."""
    steps: list[Step] = [File(unit.path, text), Command(_systemctl(unit, "daemon-reload"))]
    if not unit.per_user:
        steps.append(Account(SERVICE_USER, CREATE_USER, create=True))
    steps.append(Command(_systemctl(unit, "enable", "--now", UNIT)))
    return steps


def uninstall_steps(unit: Unit, purge: bool) -> list[Step]:
    """Stop and disable, remove the unit; with ``purge`` the state and the user too.

    A systemctl that fails (systemd not running, the unit never enabled) is reported and
    the rest still happens: the goal is that nothing of the service is left."""
    steps: list[Step] = [
        Command(_systemctl(unit, "disable", "--now", UNIT), OnFailure.WARN),
        Removal(unit.path),
        Command(_systemctl(unit, "daemon-reload"), OnFailure.WARN),
    ]
    if purge:
        steps.append(Removal(unit.home, tree=True))
        if not unit.per_user:
            steps.append(Account(SERVICE_USER, ("userdel", SERVICE_USER), create=False))
    return steps
