"""What an export knows of one release of one app (``ExportSpec``), as dokuend sends it to
dokuenctl in the ``export:spec`` reply, and the ``File`` the renderers return.

Pure: plain data and its JSON form, no I/O.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dokuen.errors import ProtocolError

# Config vars Dokuen itself reads: each is translated into the export's own terms (probes,
# grace periods, limits, restart policy) and left out of the environment.
PLATFORM_KEYS = frozenset(
    {
        "DOKUEN_HEALTHCHECK_PATH",
        "DOKUEN_BOOT_TIMEOUT",
        "DOKUEN_STOP_TIMEOUT",
        "DOKUEN_RESTART_LIMIT",
        "DOKUEN_CLIENT_MAX_BODY_SIZE",
        "DOKUEN_MEMORY_LIMIT",
        "DOKUEN_PROCESS_LIMIT",
        "BUILDPACK_URL",
        "DEPLOY_BRANCH",
    }
)
RELEASE_TYPE = "release"
# Who an image runs as (and owns its slug) when the app has no uid of its own on Dokuen
# (dokuend without root): a plain unprivileged uid, never root.
IMAGE_UID = 1000


def image_owner(uid: int | None, gid: int | None) -> tuple[int, int]:
    """The uid and gid an image of the app runs as and its slug belongs to."""
    if uid is None:
        return IMAGE_UID, IMAGE_UID
    return uid, uid if gid is None else gid


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class File:
    """A file an exporter writes: ``path`` relative to the output, ``secret`` when it holds
    config values (written 0600, and the only kind that may hold them)."""

    path: str
    content: bytes
    secret: bool = False

    @property
    def mode(self) -> int:
        return 0o600 if self.secret else 0o644


@dataclass(frozen=True)
class ProcessType:
    """A Procfile entry: ``command`` as written, ``shell`` what ``/bin/sh -c`` runs in the
    slug's directory (the buildpacks' ``.profile.d`` first, as dokuend runs it)."""

    name: str
    command: str
    shell: str
    count: int


@dataclass(frozen=True)
class ExportSpec:
    """One release of one app, with what the platform adds around it."""

    app: str
    release: str  # vN
    created: str  # ISO 8601, the release's: every timestamp of an export
    types: tuple[ProcessType, ...]  # Procfile order, the release phase left out
    release_command: ProcessType | None
    env: Mapping[str, str]  # .env and buildpack defaults under the config vars
    hosts: tuple[str, ...]  # APP.DOKUEN_DOMAIN first, then domains:add names
    health_path: str | None  # None: a TCP connect
    boot_timeout: float
    stop_timeout: float
    restart_limit: int | None  # fast failures before a process is crashed; None: forever
    memory_limit: int | None  # bytes, the whole app's
    process_limit: int | None  # processes and threads, the whole app's
    uid: int | None  # the uid the app runs as on Dokuen (None: it runs as dokuend's user)
    gid: int | None
    slug_path: str  # where the slug lives on the Dokuen machine
    database: bool = False  # DATABASE_URL points at Dokuen's PostgreSQL

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "release": self.release,
            "created": self.created,
            "types": [_type_json(t) for t in self.types],
            "release_command": _type_json(self.release_command) if self.release_command else None,
            "env": dict(sorted(self.env.items())),
            "hosts": list(self.hosts),
            "health_path": self.health_path,
            "boot_timeout": self.boot_timeout,
            "stop_timeout": self.stop_timeout,
            "restart_limit": self.restart_limit,
            "memory_limit": self.memory_limit,
            "process_limit": self.process_limit,
            "uid": self.uid,
            "gid": self.gid,
            "slug_path": self.slug_path,
            "database": self.database,
        }


def _type_json(process: ProcessType) -> dict[str, Any]:
    return {
        "name": process.name,
        "command": process.command,
        "shell": process.shell,
        "count": process.count,
    }


def spec_from_json(data: Any) -> ExportSpec:
    """The spec in an ``export:spec`` reply. Raises ProtocolError when it is not one."""
    try:
        env = {str(k): str(v) for k, v in data["env"].items()}
        if not all(_KEY.fullmatch(key) for key in env):
            raise ProtocolError("export:spec: a config key is not a variable name")
        release = data["release_command"]
        return ExportSpec(
            app=str(data["app"]),
            release=str(data["release"]),
            created=str(data["created"]),
            types=tuple(_type_from(t) for t in data["types"]),
            release_command=_type_from(release) if release else None,
            env=env,
            hosts=tuple(str(h) for h in data["hosts"]),
            health_path=None if data["health_path"] is None else str(data["health_path"]),
            boot_timeout=float(data["boot_timeout"]),
            stop_timeout=float(data["stop_timeout"]),
            restart_limit=_optional_int(data["restart_limit"]),
            memory_limit=_optional_int(data["memory_limit"]),
            process_limit=_optional_int(data["process_limit"]),
            uid=_optional_int(data["uid"]),
            gid=_optional_int(data["gid"]),
            slug_path=str(data["slug_path"]),
            database=bool(data.get("database")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"export:spec: not an export spec ({exc!r})") from None


def _type_from(data: Any) -> ProcessType:
    return ProcessType(
        str(data["name"]), str(data["command"]), str(data["shell"]), int(data["count"])
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
