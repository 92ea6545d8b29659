"""The daemon starts light: what only some requests need (a build's YAML, a backup schedule's
cron parser, S3, the client's terminal rendering, the ACME client and the X.509 parser, an
app's .env) is imported when first needed, never at start, so that an idle dokuend's memory
stays what docs/benchmarks.md measures."""

import json
import subprocess
import sys
from pathlib import Path

# Each of these costs the daemon resident memory for its whole life (docs/benchmarks.md,
# workload 3), and only some requests use it.
HEAVY = (
    "yaml",  # bin/release output, read by a build
    "croniter",  # backup schedules
    "dateutil",  # croniter's
    "difflib",  # "did you mean", for a name not found
    "boto3",  # S3 backup targets
    "botocore",
    "rich",  # dokuenctl's tables and colours
    "pygments",
    "psycopg",
    "cryptography",  # X.509 and keys: an app with a certificate (about 10 MiB)
    "acme",  # the ACME client: the first certificate ordered (with the next three, 9 MiB)
    "josepy",
    "requests",
    "urllib3",
    "dotenv",  # dokuend.env and an app's .env, when there is one (1.2 MiB)
    "click",  # dokuenctl's; dokuend reads its four options itself (1 MiB)
    # ssl links libssl and libcrypto (4 MiB): asyncio and anyio import it at their top,
    # cli/lazylibs.py keeps it to its first use; hashlib's _hashlib and hmac link libcrypto
    "ssl",
    "_ssl",
    "_hashlib",
    "hashlib",
    "hmac",
    "secrets",
    "bz2",  # shutil's, to offer archive formats dokuend never asks for (0.4 MiB)
    "lzma",
    "tarfile",  # export:slug's (0.8 MiB)
    "tempfile",  # backups' and export's (0.6 MiB)
    "zoneinfo",  # backup schedules'
    "uvloop",  # not the daemon's loop any more (2.2 MiB)
    "structlog",  # the daemon's events are dokuen/events.py (1.8 MiB)
    "termios",  # a terminal's window size, for `dokuenctl run` with a tty (60 KiB)
    "ctypes",  # the subreaper's prctl goes through _ctypes alone (0.16 MiB)
)

# Modules of the daemon's own libraries that it imports only on first use (cli/lazylibs.py).
HEAVY_PARTS = (
    "anyio._core._sockets",  # anyio's backend imports it for one UDP helper
    "anyio.streams.tls",
    "anyio.streams.stapled",
)


# A None entry in sys.modules is a module kept out on purpose.
LOADED = "[name for name, module in sys.modules.items() if module is not None]"


def started_modules(code: str, *, whole: bool = False) -> set[str]:
    shown = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json\nprint(json.dumps({LOADED}))"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = json.loads(shown.stdout)
    return set(names) if whole else {name.split(".")[0] for name in names}


def test_the_daemon_starts_without_the_heavy_modules() -> None:
    loaded = started_modules("import dokuen.cli.dokuend, dokuen.daemon")
    assert "dokuen" in loaded  # it did import the daemon
    assert sorted(loaded & set(HEAVY)) == []
    parts = started_modules("import dokuen.cli.dokuend, dokuen.daemon", whole=True)
    assert sorted(parts & set(HEAVY_PARTS)) == []


def test_the_heavy_modules_still_load_where_they_are_needed() -> None:
    """The lazy imports are real: parsing a schedule and a release pulls them in."""
    loaded = started_modules(
        "from dokuen.backup.schedule import check_cron; check_cron('0 3 * * *')\n"
        "from dokuen.deploy.buildpack import parse_release; parse_release('{}', 'x')"
    )
    assert {"croniter", "yaml"} <= loaded


def test_tls_and_dotenv_load_where_they_are_needed() -> None:
    """A certificate parsed, an order's client, a .env read: each pulls its library in."""
    loaded = started_modules(
        "from dokuen.tls.certificates import new_key_pem, describe\n"
        "import dokuen.tls.acmeclient\n"
        "from dokuen.supervise.environment import expand_dotenv\n"
        "expand_dotenv([('A', '1')], {})"
    )
    assert {"cryptography", "acme", "requests", "dotenv"} <= loaded


def test_a_certificate_still_parses_after_a_lazy_start(tmp_path: Path) -> None:
    """The deferred imports work in a process that started like the daemon: a key made,
    a self-signed certificate made and read back, a dokuend.env read."""
    (tmp_path / "dokuend.env").write_text("DOKUEN_KEEP_RELEASES=7\n")
    shown = subprocess.run(
        [sys.executable, "-c", PARSE_AFTER_START, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.split() == ["example.test", "7"]


PARSE_AFTER_START = """
import sys, datetime
import dokuen.cli.dokuend, dokuen.daemon
assert "cryptography" not in sys.modules
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from dokuen.settings import load_settings
from dokuen.tls.certificates import check_pair, new_key_pem
key_pem = new_key_pem()
key = serialization.load_pem_private_key(key_pem, None)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.test")])
now = datetime.datetime.now(datetime.UTC)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
info = check_pair(cert.public_bytes(serialization.Encoding.PEM), key_pem)
from pathlib import Path
settings = load_settings({}, Path(sys.argv[1]))
print(" ".join(info.names), settings.keep_releases)
"""


def test_what_started_without_ssl_gets_the_real_one_later(tmp_path: Path) -> None:
    """In a process that started like the daemon: ``import ssl`` gives the real module,
    anyio's TLS module reaches it, asyncio's TLS refuses in one line rather than connect
    without TLS, and tarfile still writes an xz archive."""
    shown = subprocess.run(
        [sys.executable, "-c", TLS_AFTER_START], capture_output=True, text=True, check=True
    )
    said = shown.stdout.strip().split("|")
    assert said == ["real", "anyio", "stdlib ssl module not available", "xz"]


TLS_AFTER_START = """
import sys
import dokuen.cli.dokuend, dokuen.daemon
import asyncio, io, socket, tarfile
assert "ssl" not in sys.modules and "lzma" not in sys.modules
import ssl
context = ssl.create_default_context()
print("real" if isinstance(context, ssl.SSLContext) else "stand-in", end="|")
import anyio.streams.tls, anyio._core._sockets
assert anyio.streams.tls.ssl.SSLContext is ssl.SSLContext
assert anyio._core._sockets.ssl.create_default_context is ssl.create_default_context
print("anyio", end="|")
listener = socket.create_server(("127.0.0.1", 0))
async def connect():
    port = listener.getsockname()[1]
    await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="x")
try:
    asyncio.run(connect())
except RuntimeError as exc:
    print(exc, end="|")
archive = io.BytesIO()
with tarfile.open(fileobj=archive, mode="w:xz"):
    pass
print("xz")
"""


def test_the_export_requests_are_imported_by_the_first() -> None:
    """The daemon's table names the export wing's requests without importing it (tarfile,
    the spec: 0.3 MiB); the names are the wing's own."""
    shown = subprocess.run(
        [sys.executable, "-c", EXPORT_AFTER_START], capture_output=True, text=True, check=True
    )
    assert shown.stdout.split() == ["False", "True"]


EXPORT_AFTER_START = """
import sys
import dokuen.cli.dokuend, dokuen.daemon
print(any(name.startswith("dokuen.export") for name in sys.modules))
from dokuen.daemon import EXPORT_REQUESTS
from dokuen.export.requests import ExportCommands
print(sorted(ExportCommands(lambda args: None).handlers()) == sorted(EXPORT_REQUESTS))
"""


def test_anyio_sockets_left_out_at_start_work_when_used() -> None:
    """In a process that started like the daemon: anyio's backend converts an IPv6 address
    with the real helper (imported by the call), and a UDP datagram through anyio's sockets
    module, imported afterwards, arrives with its sender's address."""
    shown = subprocess.run(
        [sys.executable, "-c", SOCKETS_AFTER_START], capture_output=True, text=True, check=True
    )
    assert shown.stdout.split() == ["::1%3", "5", "ping", "127.0.0.1", "real"]


SOCKETS_AFTER_START = """
import sys
import dokuen.cli.dokuend, dokuen.daemon
assert "anyio._core._sockets" not in sys.modules
from anyio._backends import _asyncio
print(*_asyncio.convert_ipv6_sockaddr(("::1", 5, 0, 3)))
import anyio
async def udp():
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as a:
        async with await anyio.create_udp_socket(local_host="127.0.0.1") as b:
            await b.sendto(b"ping", "127.0.0.1", a.extra(anyio.abc.SocketAttribute.local_port))
            data, (host, port) = await a.receive()
            assert port == b.extra(anyio.abc.SocketAttribute.local_port)
            print(data.decode(), host)
anyio.run(udp)
import anyio._core._sockets as sockets
print("real" if sockets.convert_ipv6_sockaddr is not _asyncio.convert_ipv6_sockaddr
      and hasattr(sockets, "create_tcp_listener") else "stand-in")
"""


def test_an_anyio_that_takes_more_from_its_sockets_module_still_starts() -> None:
    """While anyio's backend is imported, a name the stand-in does not hold (as a newer
    anyio's backend might take) brings the real sockets module in: more memory, never a
    dokuend that cannot start."""
    shown = subprocess.run(
        [sys.executable, "-c", NEWER_ANYIO], capture_output=True, text=True, check=True
    )
    assert shown.stdout.split() == ["anyio._core._sockets", "real", "ssl"]


NEWER_ANYIO = """
import sys
from dokuen.cli import lazylibs
stand_in = lazylibs.SocketsOnDemand(lazylibs.SOCKETS)
sys.modules[lazylibs.SOCKETS] = stand_in
from anyio._core._sockets import create_tcp_listener  # what the stand-in does not hold
print(create_tcp_listener.__module__)
print("real" if sys.modules[lazylibs.SOCKETS] is not stand_in else "stand-in")
print("ssl" if "ssl" in sys.modules else "no ssl")
"""


def test_the_time_zone_is_read_when_the_first_schedule_is_set(tmp_path: Path) -> None:
    """A scheduler with no schedule (every daemon without backups) runs without zoneinfo;
    the first schedule set reads the machine's zone, and its next run is in that zone."""
    shown = subprocess.run(
        [sys.executable, "-c", ZONE_ON_FIRST_SCHEDULE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.split() == ["False", "True", "True"]


ZONE_ON_FIRST_SCHEDULE = """
import datetime, sys
from pathlib import Path
import anyio
import dokuen.cli.dokuend, dokuen.daemon
from dokuen.backup.schedule import Schedule, local_zone, zone_name
from dokuen.backup.scheduler import BackupScheduler
from dokuen.store import Store
store = Store(Path(sys.argv[1]))
store.create("alpha")
scheduler = BackupScheduler(store, None, None, lambda app, text: None)
async def main():
    async with anyio.create_task_group() as group:
        await group.start(scheduler.run)
        await anyio.sleep(0.05)
        print("zoneinfo" in sys.modules)
        since = datetime.datetime.now(datetime.UTC)
        await scheduler.set_schedule("alpha", Schedule("0 3 * * *", since=since))
        await anyio.sleep(0.05)
        print("zoneinfo" in sys.modules)
        zone = zone_name(scheduler.clock.zone)
        print("alpha" in scheduler.next_runs(since) and zone == zone_name(local_zone()))
        group.cancel_scope.cancel()
anyio.run(main)
"""


SUBREAPER = """
import sys
from dokuen.supervise import reaper
became = reaper.become_subreaper()
kept_out = "ctypes" not in sys.modules
import ctypes
value = ctypes.c_int()
ctypes.CDLL(None).prctl(37, ctypes.byref(value), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
print(became, kept_out, value.value)
"""


def test_the_daemon_becomes_a_subreaper_without_ctypes_module() -> None:
    """prctl through _ctypes alone: the kernel says the process is a subreaper now, and
    ctypes' own module (its types made at import) was never loaded for it."""
    shown = subprocess.run(
        [sys.executable, "-c", SUBREAPER], capture_output=True, text=True, check=True
    )
    assert shown.stdout.split() == ["True", "True", "1"]


DUMPS_AFTER_START = """
import sys
import dokuen.cli.dokuend, dokuen.daemon
lazy = ("dokuen.backup.databases", "dokuen.backup.dumps", "dokuen.backup.manifest",
        "dokuen.backup.bundle", "dokuen.backup.renaming")
print(any(name in sys.modules for name in lazy))
from dokuen.backup.requests import DUMP_REQUESTS
from dokuen.backup.databases import DatabaseBackupCommands
made = DatabaseBackupCommands.__new__(DatabaseBackupCommands)
print(sorted(DatabaseBackupCommands.handlers(made)) == sorted(DUMP_REQUESTS))
"""


def test_the_database_backups_are_imported_by_the_first() -> None:
    """An idle daemon holds none of the dumps' modules (0.2 MiB); the daemon's table names
    their requests (DUMP_REQUESTS) without them, and the names are the requests' own. That
    the first backup request does load and answer them: tests/e2e/test_backups.py."""
    shown = subprocess.run(
        [sys.executable, "-c", DUMPS_AFTER_START], capture_output=True, text=True, check=True
    )
    assert shown.stdout.split() == ["False", "True"]
