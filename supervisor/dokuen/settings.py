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

from dotenv import dotenv_values

from dokuen.conninfo import parse_url
from dokuen.environment import DEFAULT_PATH
from dokuen.errors import SettingsError
from dokuen.nginx import check_domain
from dokuen.ports import PortRange, parse_port_range

SETTINGS_FILE = "dokuend.env"
DEFAULT_PORTS = PortRange(5000, 5999)


@dataclass(frozen=True)
class Settings:
    home: Path
    socket: Path
    port_range: PortRange = DEFAULT_PORTS
    log_max_bytes: int = 50 << 20
    log_keep: int = 5
    stop_timeout: float = 10.0
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
    build_user: str | None = None  # default: nobody when dokuend runs as root, else none
    postgres: str = "auto"  # managed, external or off; auto: managed when it is installed
    postgres_url: str | None = field(default=None, repr=False)  # external: holds a password
    postgres_port: int = 5433  # the managed cluster's port on 127.0.0.1
    postgres_bin: str | None = None  # default: the newest /usr/lib/postgresql/*/bin, or PATH
    postgres_user: str | None = None  # default: postgres (else nobody) when dokuend is root
    backup_url: str | None = None  # file:///srv/backups or s3://bucket/prefix

    @property
    def build_account(self) -> str | None:
        """Who builds run as: none of their own (dokuend's user) unless dokuend is root, which
        never runs an app's build code itself. ``DOKUEN_BUILD_USER=root`` insists."""
        if self.build_user is not None:
            return None if self.build_user == "root" and os.geteuid() == 0 else self.build_user
        return "nobody" if os.geteuid() == 0 else None

    @property
    def listen_port(self) -> int:
        if self.http_port is not None:
            return self.http_port
        return 80 if may_bind_low_ports() else 8080

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
    "DOKUEN_BUILD_USER": ("build_user", _user),
    "DOKUEN_POSTGRES": ("postgres", lambda key, text: _choice(key, text, POSTGRES_MODES)),
    "DOKUEN_POSTGRES_URL": ("postgres_url", _postgres_url),
    "DOKUEN_POSTGRES_PORT": ("postgres_port", _port),
    "DOKUEN_POSTGRES_BIN": ("postgres_bin", _text),
    "DOKUEN_POSTGRES_USER": ("postgres_user", _user),
    "DOKUEN_BACKUP_URL": ("backup_url", _text),
}
KNOWN = frozenset({"DOKUEN_HOME", "DOKUEN_SOCKET", *_PARSERS})


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
    file = home / SETTINGS_FILE
    if file.is_file():
        try:
            pairs = dotenv_values(file, interpolate=False)
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{file}: cannot read it ({exc})") from None
        for key, value in pairs.items():
            if key not in _PARSERS:
                if key in KNOWN:  # the file lives in the home: it cannot move it
                    raise SettingsError(
                        f"{file}: {key} cannot be set here (use the environment or --home)"
                    )
                known = ", ".join(sorted(_PARSERS))
                raise SettingsError(f"{file}: unknown setting {key!r} (known: {known})")
            values[key] = value or ""
    values.update({key: value for key, value in environ.items() if key in _PARSERS})
    changes = {
        field: parse(key, values[key]) for key, (field, parse) in _PARSERS.items() if key in values
    }
    settings = dataclasses.replace(Settings(home=home, socket=socket), **changes)  # type: ignore[arg-type]
    if settings.postgres == "external" and settings.postgres_url is None:
        raise SettingsError(
            "DOKUEN_POSTGRES=external needs DOKUEN_POSTGRES_URL "
            "(postgres://ADMIN:PASSWORD@HOST:PORT/postgres, a role that may create roles "
            "and databases)"
        )
    return settings
