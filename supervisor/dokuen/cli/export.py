"""``dokuenctl export`` (systemd units or Kubernetes manifests) and ``dokuenctl image`` (an
OCI image archive): an app written out for another engine. dokuend sends the release's spec
and slug (export/requests.py); the renderers are pure (export/); the files are written
here, as the caller, secrets 0600."""

import base64
import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dokuen.cli.arguments import APP
from dokuen.cli.console import Client, pass_client
from dokuen.errors import DokuenError, InvalidName
from dokuen.export.spec import ExportSpec, File, image_owner, spec_from_json
from dokuen.names import check_domain

if TYPE_CHECKING:
    from dokuen.export.oci import ImageConfig

BASE_IMAGE = "DOKUEN_BASE_IMAGE"
RELEASE = click.option("--release", metavar="vN", help="The release (default: the current one).")


def _tls(values: tuple[str, ...]) -> dict[str, str]:
    secrets = {}
    for value in values:
        host, sep, name = value.partition("=")
        if not sep or not name:
            raise InvalidName(f"--tls-secret {value!r}: use HOST=SECRET_NAME")
        secrets[check_domain(host)] = name
    return secrets


@click.command("export")
@APP
@click.option(
    "--format",
    "kind",
    type=click.Choice(["systemd", "kubernetes"]),
    required=True,
    help="systemd units, or Kubernetes manifests.",
)
@RELEASE
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write (default: APP-FORMAT here); its files of the export are replaced.",
)
@click.option("--app-dir", help="systemd: where the slug is unpacked (default: /srv/APP).")
@click.option("--port-base", type=click.IntRange(1, 65000), default=5000, show_default=True)
@click.option(
    "--systemd-version",
    type=click.IntRange(200, 999),
    default=252,
    show_default=True,
    help="systemd: of the target machine (254+ gets RestartSteps= backoff).",
)
@click.option(
    "--slug/--no-slug",
    default=True,
    help="systemd: write the slug too, APP-vN.slug.tar (default: yes).",
)
@click.option("--image", help="kubernetes: the image (default: APP:vN, see dokuenctl image).")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--tls-secret", multiple=True, metavar="HOST=NAME", help="kubernetes: TLS secret.")
@click.option("--ingress-class", help="kubernetes: the Ingress's ingressClassName.")
@pass_client
def export(
    client: Client,
    app: str,
    kind: str,
    release: str | None,
    output: Path | None,
    app_dir: str | None,
    port_base: int,
    systemd_version: int,
    slug: bool,
    image: str | None,
    port: int,
    tls_secret: tuple[str, ...],
    ingress_class: str | None,
) -> None:
    """Write an app's release out as systemd units or Kubernetes manifests."""
    client.refuse_over_ssh("export", "export writes files on the server; run it there")
    # The renderers (YAML, tar) load only here: every other dokuenctl (a git hook) starts fast.
    from dokuen.export.kubernetes import KubernetesTarget, render_kubernetes  # noqa: PLC0415
    from dokuen.export.systemd import SystemdTarget, render_systemd  # noqa: PLC0415

    tls = _tls(tls_secret)
    spec = spec_from_json(client.call("export:spec", app=app, release=release))
    if kind == "systemd":
        target = SystemdTarget(
            app_dir or f"/srv/{app}", port_base=port_base, systemd_version=systemd_version
        )
        files = render_systemd(spec, target)
    else:
        ref = image or f"{app}:{spec.release}"
        files = render_kubernetes(spec, KubernetesTarget(ref, port, tls, ingress_class))
    directory = output or Path(f"{app}-{kind}")
    write_files(directory, files)
    for file in files:
        client.echo(
            f"wrote {directory / file.path}" + (" (secret: mode 0600)" if file.secret else "")
        )
    if kind == "systemd" and slug:  # the code, for WorkingDirectory (images carry their own)
        tar = directory / f"{app}-{spec.release}.slug.tar"
        with _scratch(directory) as scratch:
            _receive_slug(client, app, spec.release, scratch / "slug.tar")
            (scratch / "slug.tar").chmod(0o600)  # as private as the release on Dokuen
            os.replace(scratch / "slug.tar", tar)
        client.echo(f"wrote {tar} (the slug: mode 0600)")
    for note in notes(spec):
        client.echo(f"note: {note}", err=True)


def notes(spec: ExportSpec) -> list[str]:
    """What the export does not carry, for the person moving the app."""
    if not spec.database:
        return []
    return [
        "DATABASE_URL points at Dokuen's PostgreSQL: move the data (dokuenctl "
        "backups:download, then pg_restore) and set DATABASE_URL to the new database",
        "backups (dokuenctl backups:schedule) are not exported: schedule pg_dump on the new "
        "engine (a CronJob, a systemd timer)",
    ]


def write_files(directory: Path, files: list[File]) -> None:
    """Write each file under ``directory`` (made if missing), whole or not at all (a new
    file renamed over the old), with its mode from the first byte."""
    directory.mkdir(parents=True, exist_ok=True)
    for file in files:
        target = directory / file.path
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{file.path}.")
        try:
            os.fchmod(fd, file.mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(file.content)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


@click.command("image")
@APP
@click.argument("release", required=False, metavar="[vN]")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The OCI archive to write (podman load -i FILE).",
)
@click.option(
    "--base",
    type=click.Path(path_type=Path),
    envvar=BASE_IMAGE,
    help=f"The base image: an OCI archive or layout (default: ${BASE_IMAGE}).",
)
@click.option("--tag", help="The image's name (default: APP:vN).")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@pass_client
def image(
    client: Client,
    app: str,
    release: str | None,
    output: Path,
    base: Path | None,
    tag: str | None,
    port: int,
) -> None:
    """Write an OCI image archive of a release: its slug as a layer on a base image."""
    client.refuse_over_ssh("image", "image writes a file on the server; run it there")
    from dokuen.export.oci import build_image, read_base  # noqa: PLC0415 (see export)

    if base is None:
        raise DokuenError(
            f"no base image: set {BASE_IMAGE} to an OCI archive or layout (skopeo copy "
            "docker://debian:12-slim oci-archive:base.tar) or give --base"
        )
    with read_base(base) as base_image:  # a bad base fails before the slug is sent
        spec = spec_from_json(client.call("export:spec", app=app, release=release))
        ref = tag or f"{app}:{spec.release}"
        directory = output.absolute().parent
        with _scratch(directory) as scratch:
            layer = scratch / "layer.tar"
            _receive_slug(client, app, spec.release, layer)
            built = scratch / "image.tar"
            with built.open("wb") as handle:
                digest = build_image(base_image, layer, image_config(spec, port), ref, handle)
            built.chmod(0o644)
            os.replace(built, output)
    client.echo(f"wrote {output}: {ref} ({digest}), {output.stat().st_size} bytes")


def image_config(spec: ExportSpec, port: int) -> "ImageConfig":
    """The image's side of the spec: the first web (or first) type is the default command;
    every type's command is a label ``io.dokuen.process.TYPE``. No config value goes in."""
    uid, gid = image_owner(spec.uid, spec.gid)
    default = next(
        (t for t in spec.types if t.name == "web"), spec.types[0] if spec.types else None
    )
    labels = {
        "io.dokuen.app": spec.app,
        "io.dokuen.release": spec.release,
        **{f"io.dokuen.process.{t.name}": t.shell for t in spec.types},
    }
    if spec.release_command is not None:
        labels["io.dokuen.process.release"] = spec.release_command.shell
    from dokuen.export.oci import ImageConfig  # noqa: PLC0415 (see export)

    return ImageConfig(
        app=spec.app,
        release=spec.release,
        created=spec.created,
        user=f"{uid}:{gid}",
        port=port,
        cmd=("/bin/sh", "-c", default.shell) if default else ("/bin/sh",),
        labels=labels,
        env={"PORT": str(port), "HOME": "/app", "APP": spec.app},
    )


def _receive_slug(client: Client, app: str, release: str, layer: Path) -> None:
    digest = hashlib.sha256()
    with layer.open("wb") as writer:

        def receive(text: str) -> None:
            for line in text.splitlines():
                data = base64.b64decode(line)
                digest.update(data)
                writer.write(data)

        sent = client.call("export:slug", receive, app=app, release=release)
    if digest.hexdigest() != sent["sha256"]:
        raise DokuenError(f"the slug of {app} {release} arrived damaged (checksum mismatch)")


@contextlib.contextmanager
def _scratch(directory: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir=directory, prefix=".dokuen-image-") as name:
        yield Path(name)


COMMANDS = (export, image)
