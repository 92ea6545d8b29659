"""The daemon's settings: one frozen object built at the edge from the environment and the
optional ``$DOKUEN_HOME/dokuend.env`` file (re-read on SIGHUP; the environment wins)."""

import dataclasses
import functools
import ipaddress
import math
import os
import pwd
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dokuen.conninfo import parse_url
from dokuen.errors import SettingsError
from dokuen.names import check_domain

SETTINGS_FILE = "dokuend.env"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class PortRange:
    first: int
    last: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __len__(self) -> int:
        return self.last - self.first + 1


def parse_port_range(text: str) -> PortRange:
    """Parse ``5000-5999``; raise SettingsError naming the expected form."""
    match = re.fullmatch(r"\s*([0-9]{1,5})\s*-\s*([0-9]{1,5})\s*", text)
    if match is None:
        raise SettingsError(f"DOKUEN_PORT_RANGE={text!r} is not a range like 5000-5999")
    first, last = int(match[1]), int(match[2])
    if not 1024 <= first <= last <= 65535:
        raise SettingsError(
            f"DOKUEN_PORT_RANGE={text!r} must satisfy 1024 <= first <= last <= 65535"
        )
    return PortRange(first, last)


DEFAULT_PORTS = PortRange(5000, 5999)
# DOKUEN_BUILD_UIDS: "home" (default) gives each app a build uid from the home's uid block
# (isolate/identity.py), a range like 2100000000-2100065535 takes them from there instead
# (the way of Dokuen 0.1), "off" builds as dokuend's user.
BuildUids = tuple[int, int] | Literal["home", "off"]
APP_UIDS_MODES = ("auto", "off")
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


@dataclass(frozen=True)
class Settings:
    home: Path
    socket: Path
    port_range: PortRange = DEFAULT_PORTS
    log_max_bytes: int = 50 << 20
    log_keep: int = 5
    stop_timeout: float = 10.0
    control_timeout: float = 60.0  # a control client silent this long before its request goes
    keep_releases: int = 5
    app_path: str = DEFAULT_PATH  # PATH given to app processes
    nginx: str = "auto"  # managed, system or off; auto: managed when nginx is installed
    nginx_binary: str | None = None  # default: nginx from PATH or /usr/sbin
    http_port: int | None = None  # default: 80 when it may bind it (see below), else 8080
    http_addr: str | None = None  # default: every address
    domain: str = "localhost"
    build_timeout: float = 900.0
    build_memory_mib: int = 4096  # RLIMIT_DATA of each build process
    build_processes: int = 512
    # pids.max of an app that sets no DOKUEN_PROCESS_LIMIT: one app's fork bomb must not take
    # the machine's process table (kernel.pid_max, often 32768) from the others. None: "max".
    app_processes: int | None = 4096
    cgroups: str = "auto"  # v2, v1 or off; auto: v2 if it can limit, else v1, else v2, else off
    build_uids: BuildUids = "home"
    uv: str | None = (
        None  # the uv builds install Python apps with; default: dokuen's own, or PATH's
    )
    app_uids: str = "auto"  # auto: each app runs as its own uid when dokuend is root; or off
    backup_url: str | None = None  # file:///srv/backups or s3://bucket/prefix (backup/targets.py)
    backup_endpoint_url: str | None = None  # an S3 compatible's endpoint (s3.py)
    # The AWS variables (AWS_KEYS) for an S3 target: secrets, so never in a repr or a log.
    aws: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    postgres: str = "auto"  # managed, external or off; auto: managed when it is installed
    postgres_url: str | None = field(default=None, repr=False)  # external: holds a password
    postgres_port: int = 5433  # the managed cluster's socket, .s.PGSQL.PORT (no TCP)
    postgres_bin: str | None = None  # default: the newest /usr/lib/postgresql/*/bin, or PATH
    postgres_user: str | None = None  # default: dokuen-postgres when dokuend is root
    https_port: int | None = None  # default: 443 when it may bind it, else 8443
    acme: bool = False  # every app gets a certificate from the ACME CA (needs acme_email)
    acme_email: str | None = None
    acme_directory: str = LETS_ENCRYPT
    acme_ca_bundle: str | None = None  # PEM file of the CA that signed the directory's TLS

    @property
    def backup_environ(self) -> dict[str, str]:
        """What the backup target is opened with (backup.targets.open_storage)."""
        environ = dict(self.aws)
        if self.backup_endpoint_url:
            environ["DOKUEN_BACKUP_ENDPOINT_URL"] = self.backup_endpoint_url
        return environ

    @property
    def isolated_builds(self) -> bool:
        """Root never runs an app's build code as itself: each app builds as a uid of its
        own, from the home's uid block or ``DOKUEN_BUILD_UIDS`` (``off``: as root after all)."""
        return self.build_uids != "off" and os.geteuid() == 0

    @property
    def listen_port(self) -> int:
        if self.http_port is not None:
            return self.http_port
        return 80 if may_bind_low_ports() else 8080

    @property
    def https_listen_port(self) -> int:
        if self.https_port is not None:
            return self.https_port
        return 443 if may_bind_low_ports() else 8443

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "dokuen.log"


CAP_NET_BIND_SERVICE = 10


@functools.cache
def may_bind_low_ports() -> bool:
    """Root, or a process with CAP_NET_BIND_SERVICE (the systemd unit runs dokuend as the
    dokuen user with it, so its nginx can listen on port 80)."""
    if os.geteuid() == 0:
        return True
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_NET_BIND_SERVICE & 1)
    return False


def _at_least(kind: Callable[[str], float], low: float) -> Callable[[str, str], float]:
    def parse(key: str, text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise SettingsError(f"{key}={text!r} is not a number") from None
        if not value < math.inf:  # float() also accepts 'nan' and 'inf'
            raise SettingsError(f"{key}={text!r} is not a finite number")
        if value < low:
            raise SettingsError(f"{key}={text!r} must be at least {low:g}")
        return value

    return parse


NGINX_MODES = ("auto", "managed", "system", "off")
POSTGRES_MODES = ("auto", "managed", "external", "off")
CGROUP_MODES = ("auto", "v2", "v1", "off")  # isolate/hierarchy.py's discover


def _choice(key: str, text: str, choices: tuple[str, ...]) -> str:
    if text not in choices:
        raise SettingsError(f"{key}={text!r} is not one of {', '.join(choices)}")
    return text


def _port(key: str, text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise SettingsError(f"{key}={text!r} is not a TCP port (1-65535)")
    return int(text)


def _address(key: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise SettingsError(f"{key}={text!r} is not an IP address like 127.0.0.1") from None


def _user(key: str, text: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", text):
        raise SettingsError(f"{key}={text!r} is not a user name")
    try:
        pwd.getpwnam(text)
    except KeyError:
        raise SettingsError(f"{key}={text!r}: no such user (create it, or pick another)") from None
    return text


def _uid_range(key: str, text: str) -> BuildUids:
    if text in ("home", "off"):
        return "home" if text == "home" else "off"
    match = re.fullmatch(r"([0-9]{4,10})-([0-9]{4,10})", text)
    if match is None or not 1000 <= int(match[1]) <= int(match[2]) < 2**32 - 2:
        raise SettingsError(
            f"{key}={text!r} is not a range of unused uids like 2100000000-2100065535 "
            "(or home, or off)"
        )
    return int(match[1]), int(match[2])


def _url(key: str, text: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+/?", text):
        raise SettingsError(f"{key}={text!r} is not a URL like https://s3.example.com")
    return text


def _directory(key: str, text: str) -> str:
    if not re.fullmatch(r"https://[^\s/]+(/\S*)?", text):
        raise SettingsError(
            f"{key}={text!r} is not an ACME directory URL like "
            "https://acme-staging-v02.api.letsencrypt.org/directory"
        )
    return text


def _email(key: str, text: str) -> str:
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text):
        raise SettingsError(f"{key}={text!r} is not an email address like you@example.com")
    return text


def _count_or_max(key: str, text: str) -> int | None:
    if text == "max":
        return None
    if not text.isdigit() or int(text) < 1:
        raise SettingsError(f"{key}={text!r} is not a number of processes (like 4096) or max")
    return int(text)


def _flag(key: str, text: str) -> bool:
    if text not in ("0", "1"):
        raise SettingsError(f"{key}={text!r} is not 0 or 1")
    return text == "1"


def _pem_file(key: str, text: str) -> str:
    if not Path(text).is_file():
        raise SettingsError(f"{key}={text!r}: no such file (give a PEM file of CA certificates)")
    return text


def _text(key: str, text: str) -> str:
    if not text:
        raise SettingsError(f"{key} is empty")
    return text


def _postgres_url(key: str, text: str) -> str:
    parse_url(text, key)  # its errors never quote the URL: it holds a password
    return text


# Setting -> (Settings field, parser). DOKUEN_HOME and DOKUEN_SOCKET are read first, apart.
_PARSERS: dict[str, tuple[str, Callable[[str, str], object]]] = {
    "DOKUEN_PORT_RANGE": ("port_range", lambda _key, text: parse_port_range(text)),
    "DOKUEN_LOG_MAX_BYTES": ("log_max_bytes", _at_least(int, 4096)),
    "DOKUEN_LOG_KEEP": ("log_keep", _at_least(int, 0)),
    "DOKUEN_STOP_TIMEOUT": ("stop_timeout", _at_least(float, 0)),
    "DOKUEN_CONTROL_TIMEOUT": ("control_timeout", _at_least(float, 0.1)),
    "DOKUEN_KEEP_RELEASES": ("keep_releases", _at_least(int, 1)),
    "DOKUEN_APP_PATH": ("app_path", _text),
    "DOKUEN_NGINX": ("nginx", lambda key, text: _choice(key, text, NGINX_MODES)),
    "DOKUEN_NGINX_BINARY": ("nginx_binary", _text),
    "DOKUEN_HTTP_PORT": ("http_port", _port),
    "DOKUEN_HTTP_ADDR": ("http_addr", _address),
    "DOKUEN_DOMAIN": ("domain", lambda _key, text: check_domain(text)),
    "DOKUEN_BUILD_TIMEOUT": ("build_timeout", _at_least(float, 1)),
    "DOKUEN_BUILD_MEMORY": ("build_memory_mib", _at_least(int, 64)),
    "DOKUEN_BUILD_PROCESSES": ("build_processes", _at_least(int, 8)),
    "DOKUEN_APP_PROCESSES": ("app_processes", _count_or_max),
    "DOKUEN_BUILD_UIDS": ("build_uids", _uid_range),
    "DOKUEN_UV": ("uv", _text),
    "DOKUEN_CGROUPS": ("cgroups", lambda key, text: _choice(key, text, CGROUP_MODES)),
    "DOKUEN_APP_UIDS": ("app_uids", lambda key, text: _choice(key, text, APP_UIDS_MODES)),
    "DOKUEN_BACKUP_URL": ("backup_url", _text),
    "DOKUEN_BACKUP_ENDPOINT_URL": ("backup_endpoint_url", _url),
    "DOKUEN_POSTGRES": ("postgres", lambda key, text: _choice(key, text, POSTGRES_MODES)),
    "DOKUEN_POSTGRES_URL": ("postgres_url", _postgres_url),
    "DOKUEN_POSTGRES_PORT": ("postgres_port", _port),
    "DOKUEN_POSTGRES_BIN": ("postgres_bin", _text),
    "DOKUEN_POSTGRES_USER": ("postgres_user", _user),
    "DOKUEN_HTTPS_PORT": ("https_port", _port),
    "DOKUEN_ACME": ("acme", _flag),
    "DOKUEN_ACME_EMAIL": ("acme_email", _email),
    "DOKUEN_ACME_DIRECTORY": ("acme_directory", _directory),
    "DOKUEN_ACME_CA_BUNDLE": ("acme_ca_bundle", _pem_file),
}
KNOWN = frozenset({"DOKUEN_HOME", "DOKUEN_SOCKET", *_PARSERS})
# The usual AWS variables, for an S3 backup target: taken as they are from dokuend.env or the
# environment, and never shown (Settings.aws is left out of its repr).
AWS_KEYS = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
    }
)


def default_home(environ: Mapping[str, str]) -> Path:
    """``/var/lib/dokuen`` for root, else ``$XDG_DATA_HOME/dokuen``."""
    if os.geteuid() == 0:
        return Path("/var/lib/dokuen")
    data = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "dokuen"


def home_and_socket(environ: Mapping[str, str], home: Path | None = None) -> tuple[Path, Path]:
    """Where the state and the control socket are (shared by dokuend and dokuenctl)."""
    home = (home or Path(environ.get("DOKUEN_HOME") or default_home(environ))).absolute()
    socket = Path(environ.get("DOKUEN_SOCKET") or home / "dokuend.sock")
    return home, socket


def load_settings(environ: Mapping[str, str], home: Path | None = None) -> Settings:
    """Build the settings; raise SettingsError naming any bad or unknown key."""
    home, socket = home_and_socket(environ, home)
    values: dict[str, str] = {}
    aws: dict[str, str] = {}
    file = home / SETTINGS_FILE
    if file.is_file():
        # Imported here: python-dotenv costs the daemon 1.2 MiB for its whole life.
        from dotenv import dotenv_values  # noqa: PLC0415

        try:
            pairs = dotenv_values(file, interpolate=False)
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{file}: cannot read it ({exc})") from None
        for key, value in pairs.items():
            if key in AWS_KEYS:
                aws[key] = value or ""
                continue
            if key not in _PARSERS:
                if key in KNOWN:  # the file lives in the home: it cannot move it
                    raise SettingsError(
                        f"{file}: {key} cannot be set here (use the environment or --home)"
                    )
                known = ", ".join(sorted(_PARSERS))
                raise SettingsError(f"{file}: unknown setting {key!r} (known: {known})")
            values[key] = value or ""
    values.update({key: value for key, value in environ.items() if key in _PARSERS})
    aws.update({key: value for key, value in environ.items() if key in AWS_KEYS})
    changes: dict[str, object] = {"aws": aws}
    changes |= {
        field: parse(key, values[key]) for key, (field, parse) in _PARSERS.items() if key in values
    }
    settings = dataclasses.replace(Settings(home=home, socket=socket), **changes)  # type: ignore[arg-type]
    if settings.postgres == "external" and settings.postgres_url is None:
        raise SettingsError(
            "DOKUEN_POSTGRES=external needs DOKUEN_POSTGRES_URL "
            "(postgres://ADMIN:PASSWORD@HOST:PORT/postgres, a role that may create roles "
            "and databases)"
        )
    if settings.acme and settings.acme_email is None:
        raise SettingsError(
            "DOKUEN_ACME=1 needs DOKUEN_ACME_EMAIL (the address the CA writes to about "
            "expiring certificates)"
        )
    return settings
