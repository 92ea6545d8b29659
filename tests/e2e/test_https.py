"""HTTPS end to end: certificates from a real ACME CA (Debian's pebble) through HTTP-01
challenges that dokuend's own nginx serves, and certificates added by hand."""

import datetime
import hashlib
import json
import shutil
import signal
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.e2e.conftest import Dokuen, find_nginx_binary, free_port_block, wait_for, write_app
from tests.e2e.pebble import HAVE_PEBBLE, NOW, MiniCa, running_pebble
from tests.e2e.test_nginx import get

pytestmark = pytest.mark.skipif(
    find_nginx_binary() is None, reason="nginx is not installed (bin/setup installs it)"
)
WEB = "web: python3 envserver.py\n"
HOST = "blog.example.com"


@pytest.fixture
def open_home() -> Iterator[Path]:
    """A home nginx's workers (nobody) can reach, for the challenge files: pytest's own
    temporary directories are private to root."""
    parent = Path(tempfile.mkdtemp(prefix="dokuen-https-", dir="/tmp"))
    parent.chmod(0o711)
    try:
        yield parent / "home"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def start_dokuen(
    home: Path, ports: tuple[int, int] | None = None, **settings: str
) -> tuple[Dokuen, int, int]:
    http, https = ports or free_port_block(2)
    daemon = Dokuen(
        home=home,
        ports=free_port_block(),
        extra_env={
            "DOKUEN_NGINX": "managed",
            "DOKUEN_HTTP_PORT": str(http),
            "DOKUEN_HTTPS_PORT": str(https),
            "DOKUEN_HTTP_ADDR": "127.0.0.1",
            "DOKUEN_DOMAIN": "example.com",
            **settings,
        },
    )
    daemon.start()
    return daemon, http, https


def https_get(port: int, host: str, cafile: Path, path: str = "/") -> tuple[int, str, str]:
    """GET over TLS with SNI ``host``, checked against ``cafile``: the status, the body and
    the sha256 of the certificate nginx served."""
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        tls.sendall(request.encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        served = hashlib.sha256(tls.getpeercert(binary_form=True) or b"").hexdigest()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace"), served


def served(port: int, host: str, cafile: Path) -> int | None:
    """The status over HTTPS once nginx serves a certificate for ``host`` (certs shows a
    new one a reload before nginx serves it), else None."""
    try:
        return https_get(port, host, cafile)[0]
    except ssl.SSLError:
        return None


def certs(daemon: Dokuen, app: str = "blog") -> dict[str, Any]:
    info: dict[str, Any] = json.loads(daemon.ctl("certs", app, "--json").stdout)
    return info


@pytest.mark.slow
def libraries(daemon: Dokuen) -> set[str]:
    """Which of OpenSSL's libraries the daemon has mapped."""
    assert daemon.process is not None
    maps = Path(f"/proc/{daemon.process.pid}/maps").read_text()
    return {name for name in ("libssl", "libcrypto") if f"/{name}." in maps}


@pytest.mark.skipif(not HAVE_PEBBLE, reason="pebble is not installed (bin/setup installs it)")
def test_acme_issue_redirect_new_domain_renewal_under_load_and_a_ca_that_is_down(
    open_home: Path, tmp_path: Path
) -> None:
    http, https = free_port_block(2)
    with running_pebble(tmp_path / "pebble", http) as pebble:
        daemon, http, https = start_dokuen(
            open_home,
            (http, https),
            DOKUEN_ACME_DIRECTORY=pebble.directory,
            DOKUEN_ACME_CA_BUNDLE=str(pebble.ca_bundle),
            DOKUEN_ACME_EMAIL="ops@example.com",
        )
        try:
            # dokuend starts without ssl (cli/lazylibs.py): its first order loads it.
            assert libraries(daemon) == set()
            root = tmp_path / "root.pem"
            root.write_bytes(pebble.root())
            daemon.deploy("blog", write_app(tmp_path / "src", WEB))
            assert certs(daemon)["certificate"] is None
            # Issued through a real HTTP-01 challenge that nginx served from the webroot.
            issued = daemon.ctl("certs:auto", "blog")
            assert f"names     {HOST}" in issued.stdout, issued.stdout
            assert libraries(daemon) == {"libssl", "libcrypto"}
            info = certs(daemon)
            assert info["certificate"]["names"] == [HOST]
            assert "Pebble" in info["certificate"]["issuer"]
            status, body, first = https_get(https, HOST, root)
            assert status == 200
            assert json.loads(body)["APP"] == "blog"
            assert first == info["certificate"]["fingerprint"]
            # DOKUEN_ACME=1 (dokuend.env, SIGHUP): a new app gets one by itself, web
            # process or not.
            (daemon.home / "dokuend.env").write_text("DOKUEN_ACME=1\n")
            assert daemon.process is not None
            daemon.process.send_signal(signal.SIGHUP)
            wait_for(lambda: "ACME for every app" in daemon.ctl("status").stdout, "the reload")
            daemon.ctl("apps:create", "shop")
            wait_for(lambda: certs(daemon, "shop")["certificate"], "shop's own certificate")
            assert wait_for(lambda: served(https, "shop.example.com", root), "shop") == 503
            # No certificate for a host no app has: the handshake is refused.
            with pytest.raises(ssl.SSLError):
                https_get(https, "nobody.example.com", root)
            # The keys are root's alone.
            tls_dir = daemon.home / "tls"
            assert tls_dir.stat().st_mode & 0o777 == 0o700
            keys = list((tls_dir / "blog").glob("*.key"))
            assert len(keys) == 1
            assert keys[0].stat().st_mode & 0o777 == 0o600
            # The redirect: 301 to HTTPS, except the challenge path.
            daemon.ctl("certs:redirect", "blog", "on")
            code, _ = get(http, HOST)
            assert code == 301
            conf = (daemon.home / "nginx/apps/blog.conf").read_text()
            assert f"return 301 https://$host:{https}$request_uri;" in conf
            assert get(http, HOST, "/.well-known/acme-challenge/nothing")[0] == 404
            assert https_get(https, HOST, root)[0] == 200
            # A new domain gets a new certificate by itself.
            daemon.ctl("domains:add", "blog", "www.example.com")
            wait_for(
                lambda: "www.example.com" in (certs(daemon)["certificate"] or {})["names"],
                "a certificate for the new domain",
                timeout=30,
            )
            assert wait_for(lambda: served(https, "www.example.com", root), "www") == 200
            # A forced renewal under load: every request answered.
            before = https_get(https, HOST, root)[2]
            results: list[object] = []
            stop = threading.Event()

            def load() -> None:
                while not stop.is_set():
                    try:
                        results.append(https_get(https, HOST, root)[0])
                    except OSError as exc:
                        results.append(exc)

            thread = threading.Thread(target=load)
            thread.start()
            try:
                daemon.ctl("certs:renew", "blog")
                wait_for(lambda: https_get(https, HOST, root)[2] != before, "the new certificate")
                count = len(results)
                wait_for(lambda: len(results) > count + 20, "requests after the swap")
            finally:
                stop.set()
                thread.join()
            assert [r for r in results if r != 200] == [], results
            assert len(results) > 20
            after = https_get(https, HOST, root)[2]
            # The CA goes down: a clear error, the old certificate keeps serving.
            pebble.stop()
            failed = daemon.ctl("certs:renew", "blog", check=False)
            assert failed.returncode == 1
            assert "cannot reach the ACME CA at https://127.0.0.1:" in failed.stderr
            assert "connection refused" in failed.stderr
            assert "Traceback" not in failed.stderr
            assert https_get(https, HOST, root)[2] == after
            shown = daemon.ctl("certs", "blog")
            assert "FAILING since" in shown.stderr
            assert "cannot reach the ACME CA" in shown.stderr
            assert "names     blog.example.com, www.example.com" in shown.stdout
            status_out = daemon.ctl("status")
            assert "warning: https: blog: certificate not obtained" in status_out.stderr
            assert "certificate NOT obtained: cannot reach the ACME CA" in daemon.log()
            assert "keeps serving" in daemon.log()
        finally:
            daemon.terminate()


def test_certs_add_refuses_bad_pairs_then_serves_a_good_one(
    open_home: Path, tmp_path: Path
) -> None:
    (tmp_path / "backups").mkdir()
    daemon, http, https = start_dokuen(open_home, DOKUEN_BACKUP_URL=f"file://{tmp_path}/backups")
    try:
        daemon.deploy("blog", write_app(tmp_path / "src", WEB))
        ca = MiniCa()
        (tmp_path / "ca.pem").write_bytes(ca.pem)
        good, other = ca.issue([HOST]), ca.issue([HOST])
        expired = ca.issue([HOST], start=NOW - datetime.timedelta(days=100))
        elsewhere = ca.issue(["shop.example.org"])

        def add(cert: bytes, key: bytes) -> Any:
            (tmp_path / "c.pem").write_bytes(cert)
            (tmp_path / "k.pem").write_bytes(key)
            return daemon.ctl(
                "certs:add", "blog", str(tmp_path / "c.pem"), str(tmp_path / "k.pem"), check=False
            )

        refusals = {
            "does not match the key": add(good.cert, other.key),
            "the certificate expired on": add(expired.cert, expired.key),
            "none of the app's hosts (blog.example.com)": add(elsewhere.cert, elsewhere.key),
            "holds no PEM certificate": add(b"not a certificate", good.key),
            "holds no PEM private key": add(good.cert, b"junk"),
        }
        for reason, result in refusals.items():
            assert result.returncode == 1, (reason, result.stdout)
            assert result.stderr.startswith("error: certificate refused for blog: "), result.stderr
            assert reason in result.stderr
        assert not (daemon.home / "nginx/apps/00-https-default.conf").exists()
        with pytest.raises(ConnectionRefusedError):  # no certificate: no HTTPS at all
            https_get(https, HOST, tmp_path / "ca.pem")
        with socket.create_server(("127.0.0.1", https)):  # someone else holds the port
            busy = add(good.cert, good.key)
        assert busy.returncode == 1
        assert f"port {https} is already in use, so nginx cannot serve HTTPS" in busy.stderr
        assert "(free it, or set DOKUEN_HTTPS_PORT); HTTP serves on" in busy.stderr
        assert certs(daemon)["certificate"] is None
        assert get(http, HOST)[0] == 200
        added = add(good.cert, good.key)
        assert added.returncode == 0, added.stderr
        assert "added by hand" in added.stdout
        status, body, served = https_get(https, HOST, tmp_path / "ca.pem")
        assert status == 200
        assert json.loads(body)["APP"] == "blog"
        assert (
            served
            == hashlib.sha256(good.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
        )
        # HTTP still answers (no redirect by default); HSTS only when asked for.
        assert get(http, HOST)[0] == 200
        conf = (daemon.home / "nginx/apps/blog.conf").read_text()
        assert "Strict-Transport-Security" not in conf
        assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf
        daemon.ctl("certs:hsts", "blog", "on")
        assert "Strict-Transport-Security" in (daemon.home / "nginx/apps/blog.conf").read_text()
        # Backed up by itself when added, with the key.
        kits = sorted((tmp_path / "backups/blog/tls").glob("*.json"))
        assert len(kits) == 1
        assert json.loads(kits[0].read_text())["key"] == good.key.decode()
        assert "certificate backed up: blog/tls/" in daemon.log()
        assert "stored blog/tls/" in daemon.ctl("certs:backup", "blog").stdout  # HSTS on now
        kits = sorted((tmp_path / "backups/blog/tls").glob("*.json"))
        assert len(kits) == 2
        # Removed: HTTPS is gone for the app, HTTP serves on.
        daemon.ctl("certs:remove", "blog")
        with pytest.raises(ConnectionRefusedError):
            https_get(https, HOST, tmp_path / "ca.pem")
        assert get(http, HOST)[0] == 200
        assert list((daemon.home / "tls/blog").glob("*.key")) == []
        # Restored from the backup: served at once, HSTS as it was.
        restored = daemon.ctl("certs:restore", "blog")
        assert f"restored certificate backup {kits[1].stem} of blog" in restored.stdout
        assert https_get(https, HOST, tmp_path / "ca.pem")[2] == served
        assert "Strict-Transport-Security" in (daemon.home / "nginx/apps/blog.conf").read_text()
        # The files follow apps:rename, and go with apps:destroy.
        daemon.ctl("apps:rename", "blog", "notes")
        moved = wait_for(lambda: certs(daemon, "notes")["certificate"], "the certificate to follow")
        assert moved["fingerprint"] == served
        assert not (daemon.home / "tls/blog").exists()
        daemon.ctl("apps:destroy", "notes", "--confirm", "notes")
        wait_for(lambda: not (daemon.home / "tls/notes").exists(), "the files to go")
        daemon.ctl("apps:create", "notes")
        assert certs(daemon, "notes")["certificate"] is None
    finally:
        daemon.terminate()


def test_without_nginx_certificates_are_refused_before_any_ca_is_asked(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    dokuen.ctl("apps:create", "blog")
    issued = MiniCa().issue(["blog.localhost"])
    (tmp_path / "c.pem").write_bytes(issued.cert)
    (tmp_path / "k.pem").write_bytes(issued.key)
    for args in (["certs:add", "blog", str(tmp_path / "c.pem"), str(tmp_path / "k.pem")],
                 ["certs:auto", "blog"]):  # fmt: skip
        result = dokuen.ctl(*args, check=False)
        assert result.returncode == 1
        assert "error: nginx is off, so nothing would serve HTTPS (set DOKUEN_NGINX=managed)" in (
            result.stderr
        )
    assert "obtaining a certificate" not in dokuen.log()
    assert not list(dokuen.home.glob("tls/blog/*.key"))
