"""Where certificates live: ``$DOKUEN_HOME/tls/`` (mode 0700, for dokuend alone; nginx's
master reads the keys as root). Each app has ``tls/APP/``: its options
(``options.json``), its certificates and keys named by the certificate's fingerprint
(``FPR.crt``, ``FPR.key``, mode 0600) and ``current.json`` naming the one nginx serves. A
new certificate is new files, then a new ``current.json``, so nginx's config names new
paths and every swap is a checked reload. The ACME account key is ``tls/account.pem``.

HTTP-01 challenges are written under ``$DOKUEN_HOME/acme/.well-known/acme-challenge/``,
readable by nginx's workers (they hold nothing secret)."""

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from dokuen.errors import DokuenError
from dokuen.proxy.nginx import CHALLENGE_PATH
from dokuen.store import write_atomic
from dokuen.tls.backups import Kit
from dokuen.tls.certificates import CertificateError, CertInfo, check_pair

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


@dataclass(frozen=True)
class Options:
    """``certs:auto``, ``certs:redirect`` and ``certs:hsts`` of one app."""

    auto: bool | None = None  # None: as DOKUEN_ACME says
    redirect: bool = False
    hsts: bool = False


@dataclass(frozen=True)
class Current:
    """The certificate an app serves now."""

    info: CertInfo
    source: str  # "acme" or "manual"
    cert: Path
    key: Path


class KeyStore:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.root = home / "tls"
        self.webroot = home / "acme"
        self._current: dict[str, Current | None] = {}

    def _app_dir(self, app: str) -> Path:
        directory = self.root / app
        self.root.mkdir(mode=0o700, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        owner = self._owner(app)
        if owner is not None and not (directory / "owner").exists():
            write_atomic(directory / "owner", f"{owner}\n", 0o600)
        return directory

    def _owner(self, app: str) -> str | None:
        """Which app the files belong to: a token kept in the app's own directory, so it
        moves with apps:rename (one rename of the directory) and goes with apps:destroy."""
        token_file = self.home / "apps" / app / "tls-owner"
        try:
            return token_file.read_text().strip()
        except FileNotFoundError:
            if not token_file.parent.is_dir():
                return None
            # secrets.token_hex's bytes, without its import (hmac links libcrypto, 3 MiB)
            write_atomic(token_file, f"{os.urandom(16).hex()}\n", 0o600)
            return token_file.read_text().strip()
        except OSError:
            return None

    def reconcile(self, apps: set[str]) -> list[str]:
        """Make the files follow the apps: a renamed app's go with it, a destroyed app's
        go away (a new app of that name starts afresh). Returns what was done."""
        done = []
        owners = {self._owner(app): app for app in apps}
        for name in sorted(self.app_names()):
            try:
                recorded: str | None = (self.root / name / "owner").read_text().strip()
            except OSError:
                recorded = None
            if recorded is None and name in apps:
                continue  # made before owners were recorded: leave it be
            owner = owners.get(recorded)
            if owner == name:
                continue
            if owner is not None and not (self.root / owner).exists():
                (self.root / name).rename(self.root / owner)
                self._current.pop(name, None)
                self._current.pop(owner, None)
                done.append(f"{name} renamed to {owner}: its certificate follows")
            else:
                self.forget(name)
                done.append(f"certificate files of {name} removed (the app is gone)")
        return done

    # -- the ACME account ---------------------------------------------------------------

    def account_key(self) -> bytes:
        """The account's RSA key (PEM), made on first use."""
        path = self.root / "account.pem"
        if path.exists():
            return path.read_bytes()
        self.root.mkdir(mode=0o700, exist_ok=True)
        # Not at the top: cryptography only once a certificate is ordered (certificates.py).
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(path, pem.decode(), 0o600)
        return pem

    # -- options ------------------------------------------------------------------------

    def options(self, app: str) -> Options:
        path = self.root / app / "options.json"
        try:
            data = json.loads(path.read_text())
            return Options(**{k: data[k] for k in ("auto", "redirect", "hsts") if k in data})
        except FileNotFoundError:
            return Options()
        except (OSError, ValueError, TypeError) as exc:
            raise DokuenError(f"{path}: cannot read it ({exc}); delete it to start over") from exc

    def set_options(self, app: str, options: Options) -> None:
        write_atomic(self._app_dir(app) / "options.json", json.dumps(asdict(options)), 0o600)

    # -- certificates -------------------------------------------------------------------

    def current(self, app: str) -> Current | None:
        """The certificate the app serves (read once, then kept)."""
        if app not in self._current:
            self._current[app] = self._read_current(app)
        return self._current[app]

    def _read_current(self, app: str) -> Current | None:
        directory = self.root / app
        try:
            record = json.loads((directory / "current.json").read_text())
            cert, key = (
                directory / f"{record['fingerprint']}.crt",
                directory / f"{record['fingerprint']}.key",
            )
            info = check_pair(cert.read_bytes(), key.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, CertificateError) as exc:
            raise DokuenError(
                f"{directory}: broken certificate files ({exc}); certs:remove"
            ) from exc
        return Current(info, str(record.get("source", "manual")), cert, key)

    def install(self, app: str, cert_pem: bytes, key_pem: bytes, source: str) -> Current:
        """Write a checked pair beside the current one and make it current."""
        info = check_pair(cert_pem, key_pem)
        directory = self._app_dir(app)
        cert, key = directory / f"{info.fingerprint}.crt", directory / f"{info.fingerprint}.key"
        write_atomic(key, key_pem.decode(), 0o600)
        write_atomic(cert, cert_pem.decode(), 0o600)
        record = {"fingerprint": info.fingerprint, "source": source}
        write_atomic(directory / "current.json", json.dumps(record), 0o600)
        self._current[app] = Current(info, source, cert, key)
        return self._current[app]  # type: ignore[return-value]

    def restore(self, app: str, previous: Current | None) -> None:
        """Make ``previous`` current again (nginx refused the new one)."""
        directory = self._app_dir(app)
        if previous is None:
            (directory / "current.json").unlink(missing_ok=True)
        else:
            record = {"fingerprint": previous.info.fingerprint, "source": previous.source}
            write_atomic(directory / "current.json", json.dumps(record), 0o600)
        self._current[app] = previous

    def prune(self, app: str) -> None:
        """Delete the certificates and keys nginx no longer serves."""
        current = self.current(app)
        keep = {current.cert.name, current.key.name} if current else set()
        for path in (self.root / app).glob("*.[ck][re][ty]"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def remove(self, app: str) -> None:
        """Forget the app's certificate (its options stay)."""
        (self.root / app / "current.json").unlink(missing_ok=True)
        self._current[app] = None
        self.prune(app)

    def app_names(self) -> set[str]:
        """The apps with files here."""
        if not self.root.is_dir():
            return set()
        return {path.name for path in self.root.iterdir() if path.is_dir()}

    def forget(self, app: str) -> None:
        """Everything of a destroyed app."""
        shutil.rmtree(self.root / app, ignore_errors=True)
        self._current.pop(app, None)

    def reload(self) -> None:
        """Read every app's files again (a backup was restored into ``tls/``)."""
        self._current.clear()

    # -- backups ------------------------------------------------------------------------

    def kit(self, app: str) -> Kit:
        """What a backup holds of the app (its certificate must exist)."""
        current = self.current(app)
        if current is None:
            raise DokuenError(f"{app} has no certificate to back up")
        account = self.root / "account.pem"
        return Kit(
            cert=current.cert.read_text(),
            key=current.key.read_text(),
            source=current.source,
            options=asdict(self.options(app)),
            account_key=account.read_text() if account.exists() else None,
        )

    def adopt_account(self, kit: Kit) -> None:
        """The backup's ACME account key, unless this home has one already."""
        account = self.root / "account.pem"
        if kit.account_key and not account.exists():
            self.root.mkdir(mode=0o700, exist_ok=True)
            write_atomic(account, kit.account_key, 0o600)

    # -- HTTP-01 challenges -------------------------------------------------------------

    def put_challenge(self, token: str, content: str) -> Path:
        if not _TOKEN.fullmatch(token):
            raise DokuenError(f"the CA sent a challenge token that is not a file name: {token!r}")
        directory = self.webroot / CHALLENGE_PATH.strip("/")
        directory.mkdir(parents=True, exist_ok=True)
        for part in (self.webroot, self.webroot / ".well-known", directory):
            os.chmod(part, 0o755)  # noqa: S103 (nginx's workers read them; no secret here)
        path = directory / token
        write_atomic(path, content, 0o644)
        return path
