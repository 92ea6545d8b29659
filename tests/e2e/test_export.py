"""dokuenctl export and image against a real dokuend and a real release: the systemd units
pass ``systemd-analyze verify``, the Kubernetes manifests pass ``kubernetes-validate``, the
OCI archive reads back layer by layer (digests, config, the slug) and runs under podman;
every export twice gives the same bytes, and no config value lands in a file not marked
secret (mode 0600)."""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Dokuen, free_port_block, wait_for, write_app
from tests.e2e.ocibase import busybox, write_base

pytestmark = pytest.mark.e2e

SECRET = 's3cr3t-"quoted"-$x'
PROCFILE = """\
web: busybox httpd -f -p $PORT -h public
worker: busybox sleep 1000
release: echo "release phase of $APP"
"""
VENV = Path(__file__).parents[2] / ".venv" / "bin"


def tree(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mode & 0o777) for p in sorted(directory.iterdir())}


def no_secret_outside_secrets(directory: Path, secret_files: set[str]) -> None:
    for path in directory.iterdir():
        if path.name not in secret_files:
            assert b"s3cr3t" not in path.read_bytes(), path
        else:
            assert path.stat().st_mode & 0o777 == 0o600, path


@pytest.fixture
def shop(dokuen: Dokuen, apps_dir: Path) -> Dokuen:
    if busybox() is None:
        pytest.skip("busybox is not installed (apt-get install busybox-static)")
    (apps_dir / "shop" / "public").mkdir(parents=True)
    source = write_app(
        apps_dir / "shop",
        PROCFILE,
        {
            "public/index.html": "hello from shop\n",
            "public/health": "ok\n",
            ".env": "GREETING=hi\n",
        },
    )
    dokuen.deploy("shop", source)
    dokuen.ctl(
        "config:set",
        "shop",
        f"SECRET_TOKEN={SECRET}",
        "DOKUEN_HEALTHCHECK_PATH=/health",
        "DOKUEN_MEMORY_LIMIT=256M",
    )
    dokuen.ctl("domains:add", "shop", "shop.example.com")
    dokuen.ctl("ps:scale", "shop", "web=2")
    wait_for(lambda: dokuen.running("shop", 3), "shop's three processes")
    return dokuen


def test_export_systemd_and_kubernetes_from_a_real_release(shop: Dokuen, tmp_path: Path) -> None:
    first, again = tmp_path / "sd1", tmp_path / "sd2"
    out = shop.ctl("export", "shop", "--format", "systemd", "-o", str(first))
    assert f"wrote {first}/shop.env (secret: mode 0600)\n" in out.stdout
    assert out.stderr == ""  # no database: nothing left behind to say
    shop.ctl("export", "shop", "--format", "systemd", "-o", str(again))
    assert tree(first) == tree(again)
    no_secret_outside_secrets(first, {"shop.env", "shop-v2.slug.tar"})
    with tarfile.open(first / "shop-v2.slug.tar") as slug:
        assert slug.extractfile("app/public/index.html").read() == b"hello from shop\n"  # type: ignore[union-attr]
    env = (first / "shop.env").read_text()
    assert 'SECRET_TOKEN="s3cr3t-\\"quoted\\"-\\$x"\n' in env
    assert 'GREETING="hi"\n' in env
    assert "DOKUEN_HEALTHCHECK_PATH" not in env  # translated, not passed on
    target = (first / "shop.target").read_text()
    assert "Wants=shop-web@1.service shop-web@2.service shop-worker@1.service\n" in target
    assert "MemoryMax=268435456\n" in (first / "shop.slice").read_text()
    units = sorted(str(p) for p in first.iterdir() if p.suffix in {".service", ".target", ".slice"})
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", *units, str(first / "shop-web@2.service")],
            capture_output=True,
            text=True,
            check=False,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert (verify.returncode, verify.stderr) == (0, "")

    units_only = tmp_path / "units"
    shop.ctl("export", "shop", "--format", "systemd", "--no-slug", "-o", str(units_only))
    assert sorted(p.name for p in units_only.iterdir()) == sorted(
        name for name in tree(first) if not name.endswith(".slug.tar")
    )

    k8s = tmp_path / "k8s"
    shop.ctl(
        "export",
        "shop",
        "--format",
        "kubernetes",
        "-o",
        str(k8s),
        "--image",
        "reg.example/shop:v4",
        "--tls-secret",
        "shop.example.com=shop-tls",
    )
    no_secret_outside_secrets(k8s, {"00-config.secret.yaml"})
    docs: dict[str, Any] = {p.name: yaml.safe_load(p.read_text()) for p in k8s.iterdir()}
    assert docs["00-config.secret.yaml"]["stringData"]["SECRET_TOKEN"] == SECRET
    web = docs["20-web.deployment.yaml"]["spec"]
    assert web["replicas"] == 2
    container = web["template"]["spec"]["containers"][0]
    assert container["image"] == "reg.example/shop:v4"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert docs["10-release.job.yaml"]["spec"]["template"]["spec"]["containers"][0]["command"][
        2
    ] == ('exec echo "release phase of $APP"')
    assert {"hosts": ["shop.example.com"], "secretName": "shop-tls"} in docs["40-ingress.yaml"][
        "spec"
    ]["tls"]
    validate = subprocess.run(
        [
            str(VENV / "kubernetes-validate"),
            "--strict",
            "-k",
            "1.37.0",
            *sorted(map(str, k8s.iterdir())),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr

    # An earlier release, by name; one that does not exist is an error that names it.
    older = shop.ctl(
        "export", "shop", "--format", "kubernetes", "--release", "v1", "-o", str(tmp_path / "v1")
    )
    assert "SECRET_TOKEN" not in (tmp_path / "v1" / "00-config.secret.yaml").read_text()
    assert older.returncode == 0
    missing = shop.ctl(
        "export",
        "shop",
        "--format",
        "systemd",
        "--release",
        "v99",
        "-o",
        str(tmp_path / "x"),
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: ")
    assert "v99" in missing.stderr
    assert not (tmp_path / "x").exists()
    usage = shop.ctl("export", "shop", "--format", "kubernetes", "--tls-secret", "x", check=False)
    assert usage.returncode == 2
    assert "HOST=SECRET_NAME" in usage.stderr


def blobs(archive: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The index and every blob of an OCI archive, each checked against its digest."""
    found = {}
    with tarfile.open(archive) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        assert json.loads(tar.extractfile("oci-layout").read()) == {"imageLayoutVersion": "1.0.0"}  # type: ignore[union-attr]
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("blobs/sha256/"):
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                assert hashlib.sha256(data).hexdigest() == member.name.rsplit("/", 1)[1]
                found[f"sha256:{member.name.rsplit('/', 1)[1]}"] = data
    return index, found


def test_image_of_a_release_reads_back_and_runs(shop: Dokuen, tmp_path: Path) -> None:
    binary = busybox()
    assert binary is not None
    base = write_base(tmp_path / "base", binary)
    image, twice = tmp_path / "shop.tar", tmp_path / "again.tar"
    made = shop.ctl("image", "shop", "-o", str(image), "--base", str(base))
    assert made.stdout.startswith(f"wrote {image}: shop:v2 (sha256:")
    shop.extra_env["DOKUEN_BASE_IMAGE"] = str(base)  # the setting, instead of --base
    shop.ctl("image", "shop", "v2", "-o", str(twice))
    assert image.read_bytes() == twice.read_bytes()

    index, found = blobs(image)
    [entry] = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "shop:v2"
    manifest = json.loads(found[entry["digest"]])
    assert len(found[entry["digest"]]) == entry["size"]
    config = json.loads(found[manifest["config"]["digest"]])
    layers = manifest["layers"]
    assert len(layers) == 2
    assert all(len(found[layer["digest"]]) == layer["size"] for layer in layers)
    slug = gzip.decompress(found[layers[1]["digest"]])
    assert config["rootfs"]["diff_ids"][1] == "sha256:" + hashlib.sha256(slug).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(slug)) as tar:
        names = tar.getnames()
        assert tar.extractfile("app/public/index.html").read() == b"hello from shop\n"  # type: ignore[union-attr]
        assert {m.mtime for m in tar.getmembers()} == {tar.getmember("app").mtime}
        owners = {(m.uid, m.gid) for m in tar.getmembers()}
    assert names == sorted(names)
    assert "app/Procfile" in names
    settings = config["config"]
    assert "PORT=5000" in settings["Env"]
    assert "PATH=/bin" in settings["Env"]
    assert not any("s3cr3t" in line for line in settings["Env"])  # config stays out of images
    assert settings["Cmd"] == ["/bin/sh", "-c", "exec busybox httpd -f -p $PORT -h public"]
    assert settings["Labels"]["io.dokuen.process.worker"] == "exec busybox sleep 1000"
    assert settings["WorkingDir"] == "/app"
    assert settings["ExposedPorts"] == {"5000/tcp": {}}
    assert owners == {tuple(int(n) for n in settings["User"].split(":"))}  # its own files
    assert settings["User"] != "0:0"

    shop.extra_env.pop("DOKUEN_BASE_IMAGE")
    unset = shop.ctl("image", "shop", "-o", str(tmp_path / "none.tar"), check=False)
    assert unset.returncode == 1
    assert unset.stderr.startswith("error: no base image: set DOKUEN_BASE_IMAGE")
    bad = shop.ctl(
        "image", "shop", "-o", str(tmp_path / "bad.tar"), "--base", str(tmp_path), check=False
    )
    assert bad.returncode == 1
    assert "index.json" in bad.stderr
    assert not (tmp_path / "bad.tar").exists()
    run_under_podman(image, tmp_path)


def run_under_podman(image: Path, tmp_path: Path) -> None:
    """podman load, then podman run of the web command, answering on its PORT."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: the image was read back layer by layer only")
    runroot = Path(tempfile.mkdtemp(prefix="dkpm-"))  # podman wants it under 50 characters
    podman = [
        "podman",
        "--root",
        str(tmp_path / "podman"),
        "--runroot",
        str(runroot),
        "--storage-driver",
        "vfs",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
        # runc where there is one: crun refuses a machine with cgroups v1 and v2 at once.
        *(["--runtime", "runc"] if shutil.which("runc") else []),
    ]
    loaded = subprocess.run(
        [*podman, "load", "-i", str(image)], capture_output=True, text=True, check=False
    )
    assert loaded.returncode == 0, loaded.stderr
    port = free_port_block(1)[0]
    name = f"shop-{os.getpid()}-{port}"
    started = subprocess.run(
        [
            *podman,
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            # Limits it may set without CAP_SYS_RESOURCE (podman's defaults are above ours).
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "-e",
            f"PORT={port}",
            "shop:v2",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if started.returncode != 0 and "OCI" in started.stderr:  # the runtime, not the image
        pytest.skip(f"podman cannot run containers on this machine: {started.stderr.strip()}")
    assert started.returncode == 0, started.stderr
    try:

        def answer() -> bytes | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    return bytes(response.read())
            except OSError:
                return None

        try:
            body = wait_for(answer, "the image's web process to answer", timeout=30)
        except BaseException:
            logs = subprocess.run(
                [*podman, "logs", name], capture_output=True, text=True, check=False
            )
            print(f"podman logs {name}:\n{logs.stdout}{logs.stderr}")
            raise
        assert body == b"hello from shop\n"
    finally:
        subprocess.run([*podman, "rm", "-f", "-t", "0", name], capture_output=True, check=False)
        shutil.rmtree(runroot, ignore_errors=True)
