"""Whether apps run as their own users, decided once when dokuend starts, and each app's
identity under that decision.

As root (the system service), every app's processes run as the app's own uid and its
builds as its build uid, both from the home's uid block (identity.py). Without root (a
developer's laptop) every app runs as the caller, and ``status`` says so and why.
``DOKUEN_APP_UIDS=off`` runs apps as dokuend's user even as root (tests of other things,
homes inside a private directory).
"""

import grp
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dokuen.errors import SettingsError
from dokuen.isolate import identity, modes
from dokuen.isolate.identity import AppIdentity, UidBlock
from dokuen.settings import Settings
from dokuen.store import AppDir


@dataclass(frozen=True)
class Isolation:
    apps: bool  # processes run as their app's uid
    reason: str | None = None  # why not, when not
    block: UidBlock | None = None  # the home's uids: apps and builds get theirs from it
    admin_gid: int | None = None  # the admin group's (control socket, logs)
    git_account: tuple[int, int] | None = None  # who pushes over ssh: owns repos and tmp/

    def identity(self, app: AppDir) -> AppIdentity | None:
        """The app's uids, or None when this home gives out none."""
        if self.block is None:
            return None
        found = identity.read_identity(app.identity_file)
        return found if found is not None and found.uid in self.block else None

    def runs_as(self, app: AppDir) -> int | None:
        """The uid the app's processes run as (None: dokuend's own)."""
        found = self.identity(app) if self.apps else None
        return found.uid if found is not None else None

    def group_of(self, app: AppDir) -> int | None:
        """The gid the app's processes run with (None: dokuend's own)."""
        found = self.identity(app) if self.apps else None
        return found.gid if found is not None else None

    def give_identity(self, home: Path, app: AppDir, name: str | None = None) -> AppIdentity | None:
        """The app's uids, allocated now when it has none (blocking file I/O). ``name``:
        the app's, when ``app`` is a directory it is made in."""
        if self.block is None:
            return None
        found = self.identity(app)
        if found is None:
            found = identity.allocate(home, self.block, name or app.name)
            identity.write_identity(app.identity_file, found)
        return found

    def set_up_app(self, home: Path, app: AppDir, name: str | None = None) -> list[str]:
        """Give the app its uids (when it has none) and its tree its owners and modes;
        return what could not be fixed. Used at apps:create and at every start (an app made
        by an older dokuend is brought up to date)."""
        found = self.give_identity(home, app, name)
        uid = found.uid if found is not None and self.apps else None
        gid = found.gid if found is not None and self.apps else None
        build_uid = found.build_uid if found is not None else None
        problems = modes.apply(modes.app_layout(app, uid, gid, build_uid))
        pusher = self.git_account  # pushes over ssh write the repository as this account
        repo = app.repo
        if pusher and repo.is_dir() and not repo.is_symlink() and repo.lstat().st_uid != pusher[0]:
            modes.hand_over(repo, *pusher)
        if uid is not None and gid is not None and app.releases.is_dir():
            for release in app.releases.iterdir():
                if release.is_dir() and not release.is_symlink():
                    info = release.lstat()
                    if (info.st_uid, info.st_gid) != (uid, gid) or info.st_mode & 0o077:
                        modes.hand_over(release, uid, gid)
        return problems

    def set_up_home(self, home: Path, apps: list[AppDir]) -> list[str]:
        """The home's own owners and modes, then every app's (``set_up_app``)."""
        problems = modes.apply(modes.home_layout(home, self.admin_gid, self.git_account))
        for app in apps:
            problems += self.set_up_app(home, app)
        return problems

    def own_release(self, app: AppDir, release: Path) -> None:
        """A release just built: the app's alone (readable and writable by its uid and
        root; dokuend's own when apps do not run as their own users)."""
        found = self.identity(app) if self.apps else None
        if found is not None:
            modes.hand_over(release, found.uid, found.gid)
        else:
            modes.apply([modes.Entry(release, 0o700)])

    def status(self) -> dict[str, Any]:
        """``{"apps": "uids" | "off", "reason": ..., "uids": "FIRST-LAST" | None}``."""
        return {
            "apps": "uids" if self.apps else "off",
            "reason": self.reason,
            "uids": f"{self.block.first}-{self.block.last}" if self.block else None,
        }


OFF = Isolation(apps=False, reason="not set up")


def set_up(
    settings: Settings, admin_group: str | None, git_account: tuple[int, int] | None = None
) -> Isolation:
    """Decide and prepare (blocking: claims the home's uid block when dokuend is root).
    ``git_account``: the uid and gid pushes over ssh run as, when not dokuend's own.

    Raises SettingsError when apps would run as their own users but cannot reach the home
    (a parent directory that others may not pass through)."""
    admin_gid = None
    if admin_group is not None:
        try:
            admin_gid = grp.getgrnam(admin_group).gr_gid
        except KeyError:
            admin_gid = None
    if os.geteuid() != 0:
        reason = f"dokuend runs as uid {os.geteuid()}, not root: every app runs as that user"
        return Isolation(apps=False, reason=reason, admin_gid=admin_gid, git_account=git_account)
    apps = settings.app_uids != "off"
    if apps:
        check_reachable(settings.home)
    block = None
    if apps or settings.build_uids == "home":
        block = identity.claim_block(settings.home)
    off = "DOKUEN_APP_UIDS=off: every app runs as root"
    return Isolation(
        apps, None if apps else off, block, admin_gid=admin_gid, git_account=git_account
    )


def check_reachable(home: Path) -> None:
    """Raise SettingsError when a user of no group cannot pass through every parent of
    ``home`` (app processes must reach their releases under it)."""
    for parent in reversed(home.parents):
        info = parent.stat()
        if not info.st_mode & stat.S_IXOTH:
            raise SettingsError(
                f"apps run as their own users but cannot reach DOKUEN_HOME {home}: {parent} "
                f"is mode {stat.S_IMODE(info.st_mode):o} (chmod o+x {parent}, or set "
                "DOKUEN_APP_UIDS=off to run every app as root)"
            )
