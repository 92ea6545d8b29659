"""OCI images by the image spec (image-spec v1.1: a layout of content-addressed blobs, an
``index.json`` and an ``oci-layout`` file, here as a tar: what ``podman load`` and
``skopeo copy oci-archive:`` read). No maintained Python library writes one (``oci-spec``
types only; umoci and buildah are programs), and the format is small.

    read_base     the base image: an OCI archive (tar) or layout (directory)
    build_image   base + the slug's layer (layer.py) + a config for the app, as an OCI archive

Deterministic: same input, same bytes (sorted entries, fixed owners and mtimes, gzip with
mtime 0, JSON with sorted keys).
"""

import contextlib
import gzip
import hashlib
import io
import json
import platform
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from dokuen.errors import DokuenError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}
_COPY = 1 << 20


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


# -- the base image ---------------------------------------------------------------------


@dataclass(frozen=True)
class BaseImage:
    """A base image: its manifest, its config, and how to open one of its blobs."""

    manifest: dict[str, Any]
    config: dict[str, Any]
    open_blob: Callable[[str], IO[bytes]]


@contextlib.contextmanager
def read_base(path: Path) -> Iterator[BaseImage]:
    """The image in the OCI archive (a tar) or layout (a directory) at ``path``; when its
    index lists several, the one for this machine's platform. Raises DokuenError naming the
    path and what is wrong."""
    if path.is_dir():
        yield _load(path, lambda name: (path / name).open("rb"))
        return
    try:
        archive = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by the with below)
    except (OSError, tarfile.TarError) as exc:
        raise DokuenError(
            f"{path}: not an OCI archive or layout ({exc}); set DOKUEN_BASE_IMAGE to one, e.g. "
            "skopeo copy docker://debian:12 oci-archive:base.tar"
        ) from None
    with archive:

        def member(name: str) -> IO[bytes]:
            try:
                handle = archive.extractfile(name.removeprefix("./"))
            except KeyError:
                handle = None
                with contextlib.suppress(KeyError):
                    handle = archive.extractfile(f"./{name}")
            if handle is None:
                raise DokuenError(f"{path}: has no {name} (not an OCI archive)")
            return handle

        yield _load(path, member)


def _load(path: Path, read: Callable[[str], IO[bytes]]) -> BaseImage:
    def document(name: str) -> dict[str, Any]:
        try:
            with read(name) as handle:
                data = json.loads(handle.read())
        except (OSError, ValueError) as exc:
            raise DokuenError(f"{path}: cannot read {name} ({exc}); is it an OCI layout?") from None
        if not isinstance(data, dict):
            raise DokuenError(f"{path}: {name} is not a JSON object")
        return data

    def blob_name(digest: str) -> str:
        algorithm, _, hexdigest = str(digest).partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64 or not hexdigest.isalnum():
            raise DokuenError(f"{path}: digest {digest!r} is not a sha256 digest")
        return f"blobs/sha256/{hexdigest}"

    descriptor = _pick(path, document("index.json"), lambda d: document(blob_name(d)))
    manifest = document(blob_name(descriptor["digest"]))
    config = document(blob_name(manifest["config"]["digest"]))
    return BaseImage(manifest, config, lambda digest: read(blob_name(digest)))


def _pick(
    path: Path, index: dict[str, Any], load: Callable[[str], dict[str, Any]]
) -> dict[str, Any]:
    """The manifest for this platform, through nested indexes."""
    arch = _ARCHES.get(platform.machine(), platform.machine())
    for _depth in range(4):
        manifests = index.get("manifests") or []
        if not manifests:
            raise DokuenError(f"{path}: its index lists no image")
        fitting = [
            m for m in manifests if (m.get("platform") or {}).get("architecture", arch) == arch
        ] or manifests
        chosen: dict[str, Any] = fitting[0]
        if chosen.get("mediaType") != INDEX:
            return chosen
        index = load(chosen["digest"])
    raise DokuenError(f"{path}: indexes nested too deep")


# -- the image --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageConfig:
    """What the image says of the app: who, where, which port, which commands."""

    app: str
    release: str
    created: str  # ISO 8601
    user: str  # uid:gid
    port: int
    cmd: tuple[str, ...]  # the default process type's
    labels: dict[str, str]
    env: dict[str, str]
    workdir: str = "/app"


def image_config(base: dict[str, Any], ours: ImageConfig, diff_id: str) -> dict[str, Any]:
    """The base's config with the app's settings and layer on top (pure)."""
    config: dict[str, Any] = json.loads(json.dumps(base))  # a deep copy of plain JSON
    settings = dict(config.get("config") or {})
    env = [line for line in settings.get("Env") or [] if line.split("=", 1)[0] not in ours.env]
    settings.update(
        Env=env + [f"{key}={value}" for key, value in sorted(ours.env.items())],
        User=ours.user,
        WorkingDir=ours.workdir,
        Cmd=list(ours.cmd),
        Entrypoint=None,
        ExposedPorts={f"{ours.port}/tcp": {}},
        Labels={**(settings.get("Labels") or {}), **ours.labels},
    )
    settings.pop("Entrypoint")
    config["config"] = settings
    config["created"] = ours.created
    config.setdefault("architecture", _ARCHES.get(platform.machine(), platform.machine()))
    config.setdefault("os", "linux")
    rootfs = dict(config.get("rootfs") or {"type": "layers"})
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), diff_id]
    config["rootfs"] = rootfs
    history = list(config.get("history") or [])
    history.append(
        {
            "created": ours.created,
            "created_by": f"dokuenctl image {ours.app} {ours.release}",
            "comment": f"the slug of {ours.app} {ours.release} in {ours.workdir}",
        }
    )
    config["history"] = history
    return config


def build_image(base: BaseImage, layer: Path, ours: ImageConfig, ref: str, out: IO[bytes]) -> str:
    """Write the OCI archive of ``base`` with the uncompressed layer tar at ``layer`` on
    top, configured by ``ours``, named ``ref``, to ``out``. Returns the manifest digest.
    Raises DokuenError when a blob of the base does not match its digest."""
    mtime = int(datetime.fromisoformat(ours.created).timestamp())
    compressed = layer.with_name(layer.name + ".gz")
    try:
        diff_id = _gzip(layer, compressed)
        config = _canonical(image_config(base.config, ours, diff_id))
        layer_digest, layer_size = _file_digest(compressed), compressed.stat().st_size
        ours_layer = {"mediaType": LAYER_GZIP, "digest": layer_digest, "size": layer_size}
        layers = [*base.manifest.get("layers", []), ours_layer]
        manifest = _canonical(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": {"mediaType": CONFIG, "digest": _digest(config), "size": len(config)},
                "layers": layers,
                "annotations": {
                    "org.opencontainers.image.created": ours.created,
                    "org.opencontainers.image.title": ours.app,
                    "org.opencontainers.image.version": ours.release,
                },
            }
        )
        index = _canonical(
            {
                "schemaVersion": 2,
                "mediaType": INDEX,
                "manifests": [
                    {
                        "mediaType": MANIFEST,
                        "digest": _digest(manifest),
                        "size": len(manifest),
                        "annotations": {REF_NAME: ref},
                    }
                ],
            }
        )
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, "blobs/", None, 0, mtime)
            _add(tar, "blobs/sha256/", None, 0, mtime)
            blobs: dict[str, tuple[int, Callable[[], IO[bytes]]]] = {
                _digest(config): (len(config), lambda: io.BytesIO(config)),
                _digest(manifest): (len(manifest), lambda: io.BytesIO(manifest)),
                layer_digest: (layer_size, lambda: compressed.open("rb")),
            }
            for entry in base.manifest.get("layers", []):
                digest = str(entry["digest"])
                blobs.setdefault(digest, (int(entry["size"]), _opener(base, digest)))
            for digest in sorted(blobs):
                size, opener = blobs[digest]
                with opener() as handle:
                    _add(
                        tar,
                        f"blobs/sha256/{digest.removeprefix('sha256:')}",
                        handle,
                        size,
                        mtime,
                        digest,
                    )
            _add(tar, "index.json", io.BytesIO(index), len(index), mtime)
            layout = _canonical({"imageLayoutVersion": "1.0.0"})
            _add(tar, "oci-layout", io.BytesIO(layout), len(layout), mtime)
    finally:
        compressed.unlink(missing_ok=True)
    return _digest(manifest)


def _opener(base: BaseImage, digest: str) -> Callable[[], IO[bytes]]:
    return lambda: base.open_blob(digest)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_COPY):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _gzip(source: Path, target: Path) -> str:
    """Compress ``source`` to ``target`` (gzip, mtime 0, no file name: the same bytes
    every time); return the digest of the uncompressed tar (the layer's diff_id)."""
    digest = hashlib.sha256()
    with (
        source.open("rb") as reader,
        target.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as writer,
    ):
        while chunk := reader.read(_COPY):
            digest.update(chunk)
            writer.write(chunk)
    return "sha256:" + digest.hexdigest()


def _add(
    tar: tarfile.TarFile,
    name: str,
    handle: IO[bytes] | None,
    size: int,
    mtime: int,
    digest: str | None = None,
) -> None:
    """One entry of the archive (a directory when ``handle`` is None); with ``digest``,
    the bytes must hash to it (a base blob that does not is an error, not a bad image)."""
    info = tarfile.TarInfo(name.rstrip("/"))
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = mtime
    if handle is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        return
    info.mode, info.size = 0o644, size
    tar.addfile(info, _Checked(handle, size, digest, name) if digest else handle)


class _Checked(io.RawIOBase):
    """Exactly ``size`` bytes of ``handle``, whose sha256 must be ``digest`` at the end."""

    def __init__(self, handle: IO[bytes], size: int, digest: str, name: str) -> None:
        self._handle, self._left, self._want, self._name = handle, size, digest, name
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        want = self._left if size < 0 else min(size, self._left)
        data = self._handle.read(want)
        if len(data) < want:
            raise DokuenError(f"base image blob {self._want}: shorter than its descriptor says")
        self._hash.update(data)
        self._left -= len(data)
        if self._left == 0 and "sha256:" + self._hash.hexdigest() != self._want:
            raise DokuenError(f"base image blob {self._want}: its bytes do not match its digest")
        return data
