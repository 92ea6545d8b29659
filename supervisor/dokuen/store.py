"""Where each app's state lives on disk (DESIGN.md "Locations"), and its atomic updates.

    $DOKUEN_HOME/apps/APP/
        env/             the config, a daemontools envdir
        formation.json   {"web": 2, "worker": 1}
        releases/vN/     immutable releases
        releases/vN.json the record of each (releases.py)
        current          symlink to releases/vN, switched atomically
        cache/           the build cache; build/ a build's scratch space
        stopped          present while the app was stopped with `dokuenctl stop`
        maintenance      present while the app is in maintenance mode (nginx answers 503)
        data/            the app's HOME and writable data directory, kept across deploys
        identity         the uids it runs and builds as (isolate/identity.py)
        repo.git/        the bare git repository pushes go to (repo.py)
        database.json    its PostgreSQL database and role, with the role's password (0600)

Every function here is blocking file I/O: the daemon calls them off the event loop when
they may be slow (copies, deletes).
"""

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dokuen.errors import Conflict, SettingsError
from dokuen.names import check_app_name

FAULTS = "DOKUEN_FAULT_EIO"


def injected_fault(path: Path) -> None:
    """The fault-injection seam of the tests (issue 13): when ``DOKUEN_FAULT_EIO`` names a
    file, a write of any file whose name is a line of it fails with EIO, as a dying disk's
    would. Unset (always, outside the tests): nothing."""
    listing = os.environ.get(FAULTS)
    if not listing:
        return
    try:
        names = Path(listing).read_text(encoding="utf-8").split()
    except OSError:
        return
    if path.name in names:
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))


def write_atomic(path: Path, content: str, mode: int | None = None) -> None:
    """Replace ``path`` with ``content`` so a crash leaves the old or the new file, never half.

    With ``mode``, the file has that mode before it holds a byte of ``content``.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            handle.write(content)
            handle.flush()
            injected_fault(path)
            os.fsync(handle.fileno())
    except BaseException as exc:  # a full disk: the old file stays, and no half-written copy
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write() names no file: say which
        raise
    temporary.replace(path)


@dataclass(frozen=True)
class AppDir:
    """The paths of one app's state."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def env(self) -> Path:
        return self.root / "env"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def cache(self) -> Path:
        """The build cache, kept from one build to the next."""
        return self.root / "cache"

    @property
    def workspace(self) -> Path:
        """A build's scratch space: its ENV_DIR, HOME and fetched buildpacks."""
        return self.root / "build"

    @property
    def data(self) -> Path:
        """The app's HOME: a writable directory of its own, kept across deploys."""
        return self.root / "data"

    @property
    def identity_file(self) -> Path:
        return self.root / "identity"

    @property
    def formation_file(self) -> Path:
        return self.root / "formation.json"

    @property
    def repo(self) -> Path:
        return self.root / "repo.git"

    @property
    def build_uid_file(self) -> Path:
        return self.root / "build-uid"

    @property
    def database_file(self) -> Path:
        return self.root / "database.json"

    @property
    def stopped_marker(self) -> Path:
        return self.root / "stopped"

    def read_formation(self) -> dict[str, int]:
        try:
            data = json.loads(self.formation_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise SettingsError(f"{self.formation_file}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not all(
            isinstance(count, int) and count >= 0 for count in data.values()
        ):
            raise SettingsError(
                f'{self.formation_file}: expected counts like {{"web": 2}} (fix or delete it)'
            )
        return {str(process_type): count for process_type, count in data.items()}

    def write_formation(self, formation: Mapping[str, int]) -> None:
        write_atomic(self.formation_file, json.dumps(dict(formation), indent=2) + "\n", 0o600)

    @property
    def domains_file(self) -> Path:
        return self.root / "domains"

    def read_domains(self) -> list[str]:
        """The app's extra host names, one a line (checked when they were added)."""
        try:
            return self.domains_file.read_text(encoding="utf-8").split()
        except FileNotFoundError:
            return []

    def write_domains(self, domains: list[str]) -> None:
        write_atomic(self.domains_file, "".join(f"{domain}\n" for domain in domains), 0o600)

    @property
    def stopped(self) -> bool:
        return self.stopped_marker.exists()

    def set_stopped(self, stopped: bool) -> None:
        if stopped:
            self.stopped_marker.touch(mode=0o600)
        else:
            self.stopped_marker.unlink(missing_ok=True)

    @property
    def maintenance_marker(self) -> Path:
        return self.root / "maintenance"

    @property
    def maintenance(self) -> bool:
        return self.maintenance_marker.exists()

    def set_maintenance(self, on: bool) -> None:
        if on:
            self.maintenance_marker.touch()
        else:
            self.maintenance_marker.unlink(missing_ok=True)


@dataclass(frozen=True)
class Store:
    """All apps under ``$DOKUEN_HOME/apps``."""

    home: Path

    @property
    def apps_root(self) -> Path:
        return self.home / "apps"

    def app(self, name: str) -> AppDir:
        return AppDir(self.apps_root / check_app_name(name))

    def app_names(self) -> list[str]:
        if not self.apps_root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.apps_root.iterdir()
            if entry.is_dir() and not entry.name.startswith(".")
        )

    def create(self, name: str, prepare: Callable[[AppDir], None] | None = None) -> AppDir:
        """Make an app's directories; raise Conflict if it exists.

        ``prepare`` fills in the rest (its git repository) before the app appears, so an app
        is there whole or not at all.
        """
        app = self.app(name)
        if app.root.exists():
            raise Conflict(f"app {name!r} already exists")
        self.apps_root.mkdir(parents=True, exist_ok=True)
        staging = self.apps_root / f".{name}.new"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "env").mkdir(mode=0o700, parents=True)
        (staging / "releases").mkdir(mode=0o711)
        if prepare is not None:
            prepare(AppDir(staging))
        staging.rename(app.root)
        return app

    @property
    def build_uids(self) -> Path:
        """One file per uid given to an app's builds, holding the app's name."""
        return self.home / "build-uids"

    def build_uid(self, name: str, first: int, last: int) -> int:
        """The uid the app's builds run as: given on its first build, and its alone (the
        file for the uid is made with O_EXCL, so two apps never get the same one)."""
        app = self.app(name)
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(app.build_uid_file.read_text(encoding="ascii"))
        self.build_uids.mkdir(mode=0o700, exist_ok=True)
        for uid in range(first, last + 1):
            try:
                claim = os.open(self.build_uids / str(uid), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                continue
            with os.fdopen(claim, "w", encoding="utf-8") as handle:
                handle.write(f"{name}\n")
            write_atomic(app.build_uid_file, f"{uid}\n")
            return uid
        raise Conflict(f"every build uid in {first}-{last} is taken (widen DOKUEN_BUILD_UIDS)")

    def rename(self, old: str, new: str) -> AppDir:
        """Move every file of app ``old`` to ``new`` in one rename (releases, env, formation,
        domains, repository, build cache, database and backup records), and the records
        kept elsewhere under DOKUEN_HOME that name the app (its build uid's claim). Raises
        Conflict when ``new`` exists. The caller has stopped the app's processes."""
        source, target = self.app(old), self.app(new)
        if target.root.exists():
            raise Conflict(f"app {new!r} already exists")
        source.root.rename(target.root)  # same directory: atomic, nothing half moved
        with contextlib.suppress(FileNotFoundError, ValueError):
            uid = int(target.build_uid_file.read_text(encoding="ascii"))
            claim = self.build_uids / str(uid)
            if claim.read_text(encoding="utf-8").strip() == old:
                write_atomic(claim, f"{new}\n")
        return target

    def destroy(self, name: str) -> None:
        """Remove every file of the app: renamed away first, so it vanishes at once. Its
        build uid is free again."""
        app = self.app(name)
        with contextlib.suppress(FileNotFoundError, ValueError):
            uid = int(app.build_uid_file.read_text(encoding="ascii"))
            claim = self.build_uids / str(uid)
            if claim.read_text(encoding="utf-8").strip() == name:
                claim.unlink()
        doomed = self.apps_root / f".{name}.destroyed"
        shutil.rmtree(doomed, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):  # deleted by hand: the app goes anyway
            app.root.rename(doomed)
            shutil.rmtree(doomed)
