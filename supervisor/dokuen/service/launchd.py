"""dokuend under launchd, the pure half: the plist rendered from ``launchd/`` and the steps
that load or remove it (install.py carries them out).

The system's job is a LaunchDaemon in ``/Library/LaunchDaemons`` (it runs as root: macOS
has no ``useradd``, and a hidden system user needs dscl and a free uid picked by hand);
``per_user`` makes a LaunchAgent of whoever installs it, in ``~/Library/LaunchAgents``.
"""

from dataclasses import dataclass
from pathlib import Path

from dokuen.service.steps import Command, Directory, File, OnFailure, Removal, Step
from dokuen.service.template import check_path, check_search_path, render

LABEL = "com.dokuen.dokuend"
PLIST = f"{LABEL}.plist"
TEMPLATE = PLIST
DAEMON_DIR = Path("/Library/LaunchDaemons")
STATE_DIR = Path("/var/lib/dokuen")
SYSTEM_LOG = Path("/var/log/dokuend.log")
# launchd starts jobs with /usr/bin:/bin:/usr/sbin:/sbin only; Homebrew's nginx, git and
# node live in /opt/homebrew (Apple silicon) or /usr/local (Intel).
SEARCH_PATH = (
    "/opt/homebrew/bin:/opt/homebrew/sbin:/usr/local/bin:/usr/local/sbin"
    ":/usr/bin:/bin:/usr/sbin:/sbin"
)


@dataclass(frozen=True)
class Job:
    """One launchd job for dokuend."""

    dokuend: Path  # the installed dokuend, absolute
    home: Path  # DOKUEN_HOME
    log: Path  # dokuend's own stdout and stderr (the apps' log is in DOKUEN_HOME/logs)
    directory: Path  # where the plist goes
    domain: str  # launchctl's: "system", or "gui/UID" for a LaunchAgent
    search_path: str = SEARCH_PATH

    @property
    def path(self) -> Path:
        return self.directory / PLIST

    @property
    def target(self) -> str:
        """The job as launchctl names it: ``system/com.dokuen.dokuend``."""
        return f"{self.domain}/{LABEL}"


def render_plist(template: str, job: Job) -> str:
    """The plist text. Raises ServiceError for a value that cannot go into it unescaped."""
    return render(
        template,
        {
            "dokuend": check_path(job.dokuend, "dokuend"),
            "home": check_path(job.home, "the state directory"),
            "log": check_path(job.log, "the log file"),
            "path": check_search_path(job.search_path),
        },
    )


def install_steps(job: Job, text: str) -> list[Step]:
    """Make the state directory, write the plist, unload an earlier install, load this one.

    ``enable`` clears a ``disable`` left by an earlier ``launchctl disable``; ``bootstrap``
    loads the job and RunAtLoad starts it."""
    return [
        # 0711: root's builds run as each app's own uid and must pass through it.
        Directory(job.home, 0o711 if job.domain == "system" else 0o700),
        File(job.path, text),
        Command(("launchctl", "bootout", job.target), OnFailure.IGNORE),
        Command(("launchctl", "enable", job.target)),
        Command(("launchctl", "bootstrap", job.domain, str(job.path))),
    ]


def uninstall_steps(job: Job, purge: bool) -> list[Step]:
    """Unload (which stops dokuend and so its apps), remove the plist; ``purge``: the state."""
    steps: list[Step] = [
        Command(("launchctl", "bootout", job.target), OnFailure.WARN),
        Removal(job.path),
    ]
    if purge:
        steps.append(Removal(job.home, tree=True))
    return steps
