"""The daemon's ``export:spec`` and ``export:slug`` requests: what dokuenctl needs to write an
app out (``export``, ``image``). dokuend reads the root-only parts (the release record, the
config, the slug) and sends them over the control socket, whose mode keeps them to those
who may read config anyway; dokuenctl writes the files, as its user, where it was asked.
"""

import base64
import contextlib
from datetime import datetime
from typing import Any

import anyio

from dokuen.apps.app import App
from dokuen.apps.options import app_options
from dokuen.control import Command, Output, optional_arg
from dokuen.deploy import releases
from dokuen.errors import InvalidName, NotFound
from dokuen.export.spec import (
    PLATFORM_KEYS,
    RELEASE_TYPE,
    ExportSpec,
    ProcessType,
    image_owner,
)
from dokuen.names import not_found
from dokuen.supervise.formation import default_formation
from dokuen.supervise.spawn import with_profile

CHUNK = 1 << 18  # bytes of slug a line carries (base64 on the wire)
LAYER_ROOT = "app"  # where the slug goes in an image, as on Heroku


class ExportCommands:
    def __init__(self, find_app: Any) -> None:
        """``find_app`` is the apps wing's: the app a request names, or NotFound."""
        self._find_app = find_app

    def handlers(self) -> dict[str, Command]:
        return {"export:spec": self.spec, "export:slug": self.slug}

    async def spec(self, args: dict[str, Any], out: Output) -> Any:
        app: App = self._find_app(args)
        target = optional_arg(args, "release")
        spec = await anyio.to_thread.run_sync(make_spec, app, target)
        return spec.to_json()

    async def slug(self, args: dict[str, Any], out: Output) -> Any:
        """The release's slug as an image layer (a tar of ``app/...``, owned by the app's
        uid), streamed as base64 output lines; the reply has its sha256 and size."""
        import hashlib  # noqa: PLC0415 (libcrypto, 3 MiB: not at start)

        app: App = self._find_app(args)
        release = find_release(app, optional_arg(args, "release"))
        found = app.runtime.isolation.identity(app.dir)
        uid, gid = image_owner(found.uid, found.gid) if found else image_owner(None, None)
        reader = (found.uid, found.gid) if found and app.runtime.isolation.apps else None
        mtime = created_epoch(release)
        # tarfile and tempfile: 1.5 MiB the daemon would hold from start for a rare request
        import tempfile  # noqa: PLC0415

        from dokuen.export.layer import write_layer  # noqa: PLC0415

        with tempfile.TemporaryFile(dir=app.runtime.settings.home) as layer:

            def write() -> None:
                write_layer(
                    release.path,
                    layer,
                    prefix=LAYER_ROOT,
                    uid=uid,
                    gid=gid,
                    mtime=mtime,
                    reader=reader,
                )
                layer.seek(0)

            await anyio.to_thread.run_sync(write)
            digest, size = hashlib.sha256(), 0
            while chunk := await anyio.to_thread.run_sync(layer.read, CHUNK):
                digest.update(chunk)
                size += len(chunk)
                await out.write(base64.b64encode(chunk).decode() + "\n")
        return {"sha256": digest.hexdigest(), "size": size, "release": release.name}


def find_release(app: App, name: str | None) -> releases.Release:
    """Release ``name`` (``vN``) of the app, or its current one. Raises NotFound."""
    if name is None:
        current = releases.current_release(app.dir)
        if current is None:
            raise NotFound(f"app {app.name!r} has no release yet (deploy it first)")
        return current
    known = releases.list_releases(app.dir)
    for release in known:
        if release.name == name:
            return release
    if not name.startswith("v") or not name[1:].isdigit():
        raise InvalidName(f"invalid release {name!r} (use vN, e.g. v3)")
    raise not_found("release", name, [r.name for r in known])


def created_epoch(release: releases.Release) -> int:
    """The release's creation time in seconds: every timestamp of an export of it."""
    with contextlib.suppress(ValueError, TypeError):
        return int(datetime.fromisoformat(str(release.record().get("created"))).timestamp())
    return 0


def make_spec(app: App, name: str | None) -> ExportSpec:
    """What an export of release ``name`` (default: the current one) of ``app`` knows
    (blocking: reads the release and the app's files). Raises NotFound, SettingsError."""
    release = find_release(app, name)
    record = release.record()
    recorded = record.get("config")
    config = {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}
    if not isinstance(recorded, dict):  # made by Dokuen 0.1: the app's config now
        config = app.config()
    options = app_options(config, app.runtime.settings.stop_timeout)
    env = {**release.defaults(config), **config}
    procfile = release.procfile()
    formation = default_formation(procfile, app.dir.read_formation())

    def process(process_type: str) -> ProcessType:
        command = procfile.command(process_type)
        shell = with_profile(command, release.path)
        return ProcessType(process_type, command, shell, formation.get(process_type, 0))

    found = app.runtime.isolation.identity(app.dir)
    return ExportSpec(
        app=app.name,
        release=release.name,
        created=str(record.get("created") or "1970-01-01T00:00:00+00:00"),
        types=tuple(process(t) for t in procfile.types if t != RELEASE_TYPE),
        release_command=process(RELEASE_TYPE) if RELEASE_TYPE in procfile.types else None,
        env={k: v for k, v in sorted(env.items()) if k not in PLATFORM_KEYS},
        hosts=tuple(app.hosts()),
        health_path=options.health.path,
        boot_timeout=options.health.timeout,
        stop_timeout=options.stop_timeout,
        restart_limit=options.policy.limit,
        memory_limit=options.memory_limit,
        process_limit=options.process_limit,
        uid=found.uid if found else None,
        gid=found.gid if found else None,
        slug_path=str(release.path),
        database=app.dir.database_file.exists(),
    )
