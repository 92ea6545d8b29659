"""The slug as an image layer (export/layer.py) and the OCI writer's guard on its base
(export/oci.py): links stay links (root never reads what an app's link points at), owners
and times are fixed, the same tree gives the same bytes; a base blob that does not match
its digest is an error, not an image."""

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from dokuen.errors import DokuenError
from dokuen.export.layer import write_layer
from dokuen.export.oci import ImageConfig, build_image, read_base
from tests.e2e.ocibase import write_base


def layer_of(root: Path) -> bytes:
    out = io.BytesIO()
    write_layer(root, out, prefix="app", uid=4242, gid=4343, mtime=1_700_000_000)
    return out.getvalue()


def test_links_stay_links_and_the_layer_is_deterministic(tmp_path: Path) -> None:
    slug = tmp_path / "slug"
    (slug / "public").mkdir(parents=True)
    (slug / "public" / "index.html").write_text("hi\n")
    (slug / "run.sh").write_text("#!/bin/sh\n")
    (slug / "run.sh").chmod(0o4755)  # setuid: not carried into an image
    secret = tmp_path / "root-only"
    secret.write_text("root's secret\n")
    (slug / "stolen").symlink_to(secret)  # an app's link to a file only root may read
    (slug / "etc").symlink_to("/etc")
    os.mkfifo(slug / "pipe")
    first = layer_of(slug)
    os.utime(slug / "run.sh", (1, 1))  # times on disk do not matter
    assert layer_of(slug) == first
    assert b"root's secret" not in first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == sorted(members)
    assert set(members) == {
        "app",
        "app/etc",
        "app/public",
        "app/public/index.html",
        "app/run.sh",
        "app/stolen",
    }
    assert members["app/stolen"].issym()
    assert members["app/stolen"].linkname == str(secret)
    assert members["app/run.sh"].mode == 0o755
    assert {(m.uid, m.gid, m.mtime, m.uname) for m in members.values()} == {
        (4242, 4343, 1_700_000_000, "")
    }


def test_a_base_blob_that_does_not_match_its_digest_is_refused(tmp_path: Path) -> None:
    base = write_base(tmp_path / "base", Path("/bin/true"))
    index = json.loads((base / "index.json").read_text())
    manifest_file = base / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]
    layer = json.loads(manifest_file.read_text())["layers"][0]["digest"].split(":")[1]
    blob = base / "blobs/sha256" / layer
    blob.write_bytes(blob.read_bytes()[:-1] + b"X")  # same size, other bytes
    slug = tmp_path / "layer.tar"
    slug.write_bytes(layer_of(base))
    ours = ImageConfig("shop", "v1", "2026-12-01T10:00:00+00:00", "1:1", 5000, ("/bin/sh",), {}, {})
    with read_base(base) as image, pytest.raises(DokuenError, match="do not match its digest"):
        build_image(image, slug, ours, "shop:v1", io.BytesIO())
    blob.unlink()
    with read_base(base) as image, pytest.raises((DokuenError, OSError)):
        build_image(image, slug, ours, "shop:v1", io.BytesIO())


def test_a_file_the_app_may_not_read_is_refused_not_copied_out(tmp_path: Path) -> None:
    """Where fs.protected_hardlinks is 0 an app may hard-link a file it cannot read (root's)
    into its release; root tarring the release must not copy it out for the app."""
    if os.geteuid() != 0:
        pytest.skip("needs root to own a file the app may not read")
    app_uid, app_gid = 54321, 54321
    slug = tmp_path / "slug"
    slug.mkdir()
    (slug / "mine.txt").write_text("the app's own\n")
    os.chown(slug / "mine.txt", app_uid, app_gid)
    (slug / "mine.txt").chmod(0o600)
    (slug / "shared.txt").write_text("world-readable, root's\n")  # 0644: the app may read it
    secret = tmp_path / "shadow"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    os.link(secret, slug / "stolen")  # what the app could do with protected_hardlinks=0

    def layer(reader: tuple[int, int] | None) -> bytes:
        out = io.BytesIO()
        write_layer(slug, out, prefix="app", uid=1, gid=1, mtime=0, reader=reader)
        return out.getvalue()

    with pytest.raises(DokuenError, match=r"^app/stolen: the app's user may not read it"):
        layer((app_uid, app_gid))
    os.unlink(slug / "stolen")
    tar_bytes = layer((app_uid, app_gid))
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        assert sorted(tar.getnames()) == ["app", "app/mine.txt", "app/shared.txt"]
    os.link(secret, slug / "stolen")
    assert b"root's secret" in layer(None)  # the check is what keeps it out
