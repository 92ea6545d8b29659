"""An app's certificate inside its backups, end to end: the installed dokuend with its own
nginx and PostgreSQL; ``backups:capture`` stores the certificate beside the dump,
``backups:restore`` serves it again at once (compared over a real TLS connection), a
certificate changed in the target is refused before anything changes, and ``apps:rename``
moves it with the other backups."""

import hashlib
import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from dokuen.data.postgres import find_bindir, has_server
from tests.e2e.conftest import Dokuen, find_nginx_binary, free_port_block, wait_for, write_app
from tests.e2e.pebble import MiniCa
from tests.e2e.test_backups import set_two_days_ago
from tests.e2e.test_https import HOST, WEB, https_get
from tests.e2e.test_postgres import sql

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(find_nginx_binary() is None, reason="nginx is not installed"),
    pytest.mark.skipif(not has_server(find_bindir(None)), reason="PostgreSQL is not installed"),
]


@pytest.fixture
def top() -> Iterator[Path]:
    """World-traversable: PostgreSQL's account and nginx's workers must reach the home."""
    top = Path(tempfile.mkdtemp(prefix="dokuen-certbackup-", dir="/tmp"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def fingerprint(pem_cert: bytes) -> str:
    from cryptography import x509  # noqa: PLC0415

    der = x509.load_pem_x509_certificate(pem_cert).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


@pytest.mark.slow
def test_a_backup_brings_the_certificate_back_refuses_a_changed_one_and_follows_a_rename(
    top: Path, tmp_path: Path
) -> None:
    backups = top / "backups"
    backups.mkdir()
    first_port, _ = free_port_block(3)
    http, https, postgres = first_port, first_port + 1, first_port + 2
    daemon = Dokuen(
        home=top / "home",
        ports=free_port_block(),
        extra_env={
            "DOKUEN_NGINX": "managed",
            "DOKUEN_HTTP_PORT": str(http),
            "DOKUEN_HTTPS_PORT": str(https),
            "DOKUEN_HTTP_ADDR": "127.0.0.1",
            "DOKUEN_DOMAIN": "example.com",
            "DOKUEN_POSTGRES": "managed",
            "DOKUEN_POSTGRES_PORT": str(postgres),
        },
    )
    daemon.home.mkdir()
    (daemon.home / "dokuend.env").write_text(f"DOKUEN_BACKUP_URL=file://{backups}\n")
    daemon.start()
    ca_file = tmp_path / "ca.pem"
    try:
        daemon.deploy("blog", write_app(tmp_path / "src", WEB))
        daemon.ctl("pg:create", "blog")
        url = daemon.ctl("config:get", "blog", "DATABASE_URL").stdout.strip()
        sql(url, "CREATE TABLE notes (body text)")
        ca = MiniCa()
        ca_file.write_bytes(ca.pem)
        first, second, forged = ca.issue([HOST]), ca.issue([HOST]), ca.issue([HOST])

        def add(pair: object) -> None:
            (tmp_path / "c.pem").write_bytes(pair.cert)  # type: ignore[attr-defined]
            (tmp_path / "k.pem").write_bytes(pair.key)  # type: ignore[attr-defined]
            daemon.ctl("certs:add", "blog", str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))

        # Captured with the database: the kit beside the dump, root-only, in the manifest.
        add(first)
        daemon.ctl("certs:hsts", "blog", "on")
        captured = daemon.ctl("backups:capture", "blog").stdout
        assert ", its certificate)" in captured, captured
        (manifest_path,) = (backups / "blog/db").glob("*Z.json")
        manifest = json.loads(manifest_path.read_text())
        kit_path = backups / f"blog/db/{manifest['id']}.tls.json"
        assert kit_path.stat().st_mode & 0o777 == 0o600
        assert hashlib.sha256(kit_path.read_bytes()).hexdigest() == manifest["certificate_sha256"]
        kit = json.loads(kit_path.read_text())
        assert kit["key"] == first.key.decode()
        assert kit["options"]["hsts"] is True
        assert kit["account_key"] is None or "PRIVATE KEY" in kit["account_key"]

        # Removed, then restored from the backup: served at once, without asking any CA.
        daemon.ctl("certs:remove", "blog")
        with pytest.raises(ConnectionRefusedError):
            https_get(https, HOST, ca_file)
        restored = daemon.ctl("backups:restore", "blog", "--confirm", "blog")
        assert ", with its certificate" in restored.stdout, restored.stdout
        assert restored.stderr == ""
        status, _body, served = https_get(https, HOST, ca_file)
        assert (status, served) == (200, fingerprint(first.cert))
        assert "Strict-Transport-Security" in (daemon.home / "nginx/apps/blog.conf").read_text()

        # A certificate changed in the target (a pair that would pass every other check) is
        # refused before anything changes: the database and the serving certificate stay.
        add(second)
        daemon.ctl("backups:capture", "blog")
        newest = sorted((backups / "blog/db").glob("*Z.json"))[-1].stem
        sql(url, "INSERT INTO notes VALUES ('after the backup')")
        tampered = json.loads((backups / f"blog/db/{newest}.tls.json").read_text())
        tampered.update(cert=forged.cert.decode(), key=forged.key.decode())
        (backups / f"blog/db/{newest}.tls.json").write_text(json.dumps(tampered))
        refused = daemon.ctl("backups:restore", "blog", newest, "--confirm", "blog", check=False)
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert refused.stderr.startswith(f"error: backup {newest} of blog is corrupt: its certif")
        assert "nothing was restored" in refused.stderr
        assert https_get(https, HOST, ca_file)[2] == fingerprint(second.cert)
        assert sql(url, "SELECT body FROM notes") == [("after the backup",)]

        # A damaged kit (not a pair) is refused the same way, by its check.
        first_id = manifest["id"]
        good_kit = kit_path.read_bytes()
        broken = json.loads(good_kit)
        broken["key"] = forged.key.decode()
        kit_path.write_text(json.dumps(broken))
        digest = hashlib.sha256(kit_path.read_bytes()).hexdigest()
        manifest_path.write_text(json.dumps({**manifest, "certificate_sha256": digest}))
        restore_first = ("backups:restore", "blog", first_id, "--confirm", "blog")
        mismatched = daemon.ctl(*restore_first, check=False)
        assert mismatched.returncode == 1
        assert "does not match the key" in mismatched.stderr, mismatched.stderr
        assert "the certificate that serves is unchanged" in mismatched.stderr
        assert https_get(https, HOST, ca_file)[2] == fingerprint(second.cert)
        kit_path.write_bytes(good_kit)
        manifest_path.write_text(json.dumps(manifest))

        # apps:rename moves the database backups with their certificates, and the tls/ kits.
        assert list((backups / "blog/tls").glob("*.json"))  # certs:add stored them
        daemon.ctl("apps:rename", "blog", "notes")
        assert [path for path in backups.rglob("blog/**/*") if path.is_file()] == []
        assert (backups / f"notes/db/{first_id}.tls.json").read_bytes() == good_kit
        assert list((backups / "notes/tls").glob("*.json"))
        # Restored into notes, whose host the certificate does not name: a warning only.
        daemon.ctl("certs:remove", "notes")
        moved = daemon.ctl("backups:restore", "notes", first_id, "--confirm", "notes")
        assert ", with its certificate" in moved.stdout
        assert moved.stderr.startswith(f"warning: the certificate of backup {first_id} names ")
        assert "none of notes's hosts (notes.example.com)" in moved.stderr
        notes_conf = (daemon.home / "nginx/apps/notes.conf").read_text()
        assert "ssl_certificate" in notes_conf
        assert json.loads(daemon.ctl("certs", "notes", "--json").stdout)["certificate"][
            "fingerprint"
        ] == fingerprint(first.cert)
        with socket.create_connection(("127.0.0.1", https), timeout=5):
            pass  # nginx still listens on HTTPS

        # Schedules carry it too: with the database's dump, or alone for an app without one.
        daemon.ctl("apps:create", "shop")
        shop = ca.issue(["shop.example.com"])
        (tmp_path / "c.pem").write_bytes(shop.cert)
        (tmp_path / "k.pem").write_bytes(shop.key)
        daemon.ctl("certs:add", "shop", str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
        for app in ("notes", "shop"):
            daemon.ctl("backups:schedule", app, "0 3 * * *")
        daemon.terminate()
        for app in ("notes", "shop"):
            set_two_days_ago(daemon, app)
        daemon.start()

        def scheduled(app: str) -> dict[str, object] | None:
            status = daemon.home / "apps" / app / "backup-status.json"
            run = status.exists() and json.loads(status.read_text())["scheduled"]
            return run or None

        notes_run = wait_for(lambda: scheduled("notes"), "the scheduled backup of notes")
        shop_run = wait_for(lambda: scheduled("shop"), "the scheduled backup of shop")
        assert notes_run["ok"] is True, notes_run
        assert shop_run["ok"] is True, shop_run
        notes_manifest = json.loads((backups / f"notes/db/{notes_run['id']}.json").read_text())
        notes_kit = (backups / f"notes/db/{notes_run['id']}.tls.json").read_bytes()
        assert hashlib.sha256(notes_kit).hexdigest() == notes_manifest["certificate_sha256"]
        shop_kit = json.loads((backups / f"shop/tls/{shop_run['id']}.json").read_text())
        assert shop_kit["cert"] == shop.cert.decode()
        assert len(list((backups / "shop/tls").glob("*.json"))) == 2  # certs:add's and this
    finally:
        daemon.terminate()
