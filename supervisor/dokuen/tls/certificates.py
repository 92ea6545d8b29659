"""Certificates, the pure half: a PEM chain and its key checked against each other, the
names, issuer and expiry of a certificate, whether it serves an app's hosts, and when to
renew it. No I/O; the clock is an argument."""

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dokuen.errors import DokuenError

# cryptography (and the OpenSSL it loads) costs dokuend about 10 MiB for its whole life;
# only an app with a certificate needs it, so it is imported by the functions that parse
# or make one (tests/test_imports.py keeps it out of the daemon's start).
if TYPE_CHECKING:
    from cryptography import x509

RENEW_BEFORE = datetime.timedelta(days=30)
FIRST_RETRY = 60.0  # seconds after the first failure; doubled after each next one
LAST_RETRY = 6 * 3600.0


class CertificateError(DokuenError):
    """A certificate or key that cannot serve: the message says why."""


@dataclass(frozen=True)
class CertInfo:
    """What ``dokuenctl certs`` shows of the leaf certificate."""

    names: tuple[str, ...]
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    fingerprint: str  # sha256 of the leaf's DER, hex: names the files it is stored in
    ocsp: bool  # it names an OCSP responder (nginx may staple)

    def as_dict(self) -> dict[str, object]:
        return {
            "names": list(self.names),
            "issuer": self.issuer,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "fingerprint": self.fingerprint,
        }


def describe(cert_pem: bytes) -> CertInfo:
    """The leaf (first) certificate of a PEM chain; CertificateError when it is none."""
    import hashlib  # noqa: PLC0415 (libcrypto, 3 MiB: not at start)

    from cryptography import x509  # noqa: PLC0415 (see the imports)
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID  # noqa: PLC0415

    leaf = load_chain(cert_pem)[0]
    try:
        alt = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(alt.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    if not names:  # old style: the common name only
        names = tuple(
            str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        )
    issuer = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        ocsp = any(d.access_method == AuthorityInformationAccessOID.OCSP for d in aia)
    except x509.ExtensionNotFound:
        ocsp = False
    return CertInfo(
        names=tuple(name.lower() for name in names),
        issuer=str(issuer[0].value) if issuer else leaf.issuer.rfc4514_string(),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        fingerprint=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        ocsp=ocsp,
    )


def load_chain(cert_pem: bytes) -> "list[x509.Certificate]":
    from cryptography import x509  # noqa: PLC0415 (see the imports)

    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        chain = []
    if not chain:
        raise CertificateError("the certificate file holds no PEM certificate")
    return chain


def check_pair(cert_pem: bytes, key_pem: bytes) -> CertInfo:
    """The chain's leaf must be the key's: else CertificateError saying so."""
    from cryptography.exceptions import UnsupportedAlgorithm  # noqa: PLC0415 (see the imports)
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    leaf = load_chain(cert_pem)[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CertificateError("the key is encrypted (give it without a passphrase)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError("the key file holds no PEM private key") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise CertificateError("the certificate does not match the key (it is another key's)")
    return describe(cert_pem)


def covers(name: str, host: str) -> bool:
    """Whether a certificate name (``*.example.com`` too) covers a host name."""
    if name.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == name[2:]
    return name == host


def served_hosts(info: CertInfo, hosts: list[str]) -> list[str]:
    """The app's hosts the certificate names."""
    return [host for host in hosts if any(covers(name, host) for name in info.names)]


def check_usable(info: CertInfo, hosts: list[str], now: datetime.datetime) -> None:
    """Refuse (CertificateError with the reason) a certificate that has expired, is not
    valid yet, or names none of the app's hosts."""
    if now >= info.not_after:
        raise CertificateError(f"the certificate expired on {info.not_after:%Y-%m-%d %H:%M} UTC")
    if now < info.not_before:
        raise CertificateError(
            f"the certificate is not valid before {info.not_before:%Y-%m-%d %H:%M} UTC"
        )
    if not served_hosts(info, hosts):
        raise CertificateError(
            f"the certificate names {', '.join(info.names) or 'no host'}, none of the app's "
            f"hosts ({', '.join(hosts)}); add the domain first (domains:add)"
        )


def renew_at(info: CertInfo) -> datetime.datetime:
    """30 days before expiry, or when a third of its life is left if that comes later
    (a short-lived certificate is not renewed all the time)."""
    life = info.not_after - info.not_before
    return info.not_after - min(RENEW_BEFORE, life / 3)


def needs_new(info: CertInfo | None, hosts: list[str], now: datetime.datetime) -> str | None:
    """Why an automatic certificate must be obtained now, or None: there is none, it
    misses one of the app's hosts (a new domain), or it is due for renewal."""
    if info is None:
        return "no certificate yet"
    missing = [host for host in hosts if host not in served_hosts(info, hosts)]
    if missing:
        return f"not valid for {', '.join(missing)}"
    if now >= renew_at(info):
        return f"expires on {info.not_after:%Y-%m-%d}"
    return None


def retry_delay(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: 1 min, 2, 4, ... 6 h."""
    return float(min(LAST_RETRY, FIRST_RETRY * 2 ** max(0, failures - 1)))


def new_key_pem() -> bytes:
    """A fresh ECDSA P-256 key for a certificate, PEM (PKCS#8, unencrypted)."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 (see the imports)
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
