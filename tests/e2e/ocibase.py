"""A minimal base image for the image tests, written by hand from the image spec (not by the
code under test): Debian's static busybox as /bin/busybox, with /bin/sh linked to it, in an
OCI layout directory."""

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")


def busybox() -> Path | None:
    """Debian's busybox-static (a static binary runs on any base), or None."""
    found = shutil.which("busybox") or (str(BUSYBOX) if BUSYBOX.exists() else None)
    return Path(found) if found else None


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_base(layout: Path, binary: Path) -> Path:
    """Write the OCI layout at ``layout``; return it."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name in ("bin", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        data = binary.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in ("sh", "id", "cat", "sleep"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    layer_bytes = raw.getvalue()
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **_blob(layout, layer_bytes)}
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin", "PORT=1"],
            "Cmd": ["/bin/sh"],
            "Labels": {"base": "busybox"},
        },
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
        "history": [{"created_by": "tests/e2e/ocibase.py"}],
    }
    config_desc = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        **_blob(layout, json.dumps(config).encode()),
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer],
    }
    manifest_desc = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **_blob(layout, json.dumps(manifest).encode()),
    }
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return layout
