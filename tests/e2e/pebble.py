"""Let's Encrypt's test CA, Debian's ``pebble``, on loopback for the HTTPS tests: its
directory's TLS certificate made here (the package ships none), its HTTP-01 validation
pointed at Dokuen's nginx, and ``pebble-challtestsrv`` as its DNS server answering
127.0.0.1 for every name. Also the PEM material the tests make with ``cryptography``."""

import contextlib
import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.conftest import free_port_block, wait_for

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"
HAVE_PEBBLE = os.access(PEBBLE, os.X_OK) and os.access(CHALLTESTSRV, os.X_OK)
NOW = datetime.datetime.now(datetime.UTC)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Issued:
    cert: bytes  # PEM
    key: bytes  # PEM
    certificate: x509.Certificate


class MiniCa:
    """A CA of our own, for pebble's TLS and for the certificates given to certs:add."""

    def __init__(self, name: str = "Dokuen test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        names: list[str],
        *,
        days: int = 90,
        start: datetime.datetime | None = None,
        ips: list[str] = (),  # type: ignore[assignment]
    ) -> Issued:
        import ipaddress  # noqa: PLC0415

        key = ec.generate_private_key(ec.SECP256R1())
        start = start or NOW - datetime.timedelta(hours=1)
        alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        return Issued(pem + self.pem, key_pem(key), certificate)


@dataclass
class Pebble:
    directory: str
    management: int
    ca_bundle: Path  # what signed pebble's own TLS certificate
    process: subprocess.Popen[bytes]

    def root(self) -> bytes:
        """The root pebble signs with (a new one every time pebble starts)."""
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        url = f"https://127.0.0.1:{self.management}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return bytes(response.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


@contextlib.contextmanager
def running_pebble(workdir: Path, http_port: int) -> Iterator[Pebble]:
    """pebble validating HTTP-01 on ``http_port`` of whatever name, via a DNS server that
    sends every name to 127.0.0.1; both stopped at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca = MiniCa("pebble's TLS test CA")
    tls = ca.issue(["localhost"], ips=["127.0.0.1"], days=30)
    (workdir / "ca.pem").write_bytes(ca.pem)
    (workdir / "tls.pem").write_bytes(tls.cert)
    (workdir / "tls.key").write_bytes(tls.key)
    first, _ = free_port_block(5)
    listen, management, dns, dns_management = first, first + 1, first + 2, first + 3
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{listen}",
            "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": str(workdir / "tls.pem"),
            "privateKey": str(workdir / "tls.key"),
            "httpPort": http_port,
            "tlsPort": first + 4,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (workdir / "pebble.json").write_text(json.dumps(config))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PEBBLE_VA_NOSLEEP": "1"}
    env |= {"PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
    log = (workdir / "pebble.log").open("wb")
    dns_server = subprocess.Popen(
        [
            CHALLTESTSRV,
            "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
            "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
            "-management", f"127.0.0.1:{dns_management}",
        ],
        stdout=log, stderr=log, env=env,
    )  # fmt: skip
    process = subprocess.Popen(
        [PEBBLE, "-config", str(workdir / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns}"],
        stdout=log, stderr=log, env=env, cwd=workdir,
    )  # fmt: skip
    pebble = Pebble(f"https://127.0.0.1:{listen}/dir", management, workdir / "ca.pem", process)
    try:
        wait_for(lambda: _listening(listen) and _listening(management), "pebble to listen")
        wait_for(lambda: _listening(dns_management), "pebble-challtestsrv to listen")
        yield pebble
    finally:
        pebble.stop()
        dns_server.terminate()
        dns_server.wait(10)
        log.close()
