"""How to reach a PostgreSQL server: libpq's connection keywords, read from a
``postgres://`` URL, and given to psycopg (keywords), to the PostgreSQL tools (``PG*``
environment variables, never argv: a password there shows in ``ps``) and to apps
(``DATABASE_URL``).

A host that starts with ``/`` is the directory of a unix socket; its URL names it in the
query, ``postgresql://USER:PASSWORD@/DATABASE?host=/DIR&port=PORT``, the form libpq (and
so psycopg, psql, Ruby's pg), dj-database-url, SQLAlchemy and node-postgres all read.

Passwords are secrets: ``repr`` leaves them out and no error message quotes a URL.
"""

from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from dokuen.errors import SettingsError

DEFAULT_PORT = 5432
# URL query parameters we pass on, and the environment variables libpq reads them from.
EXTRA_PARAMETERS = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
}
_SHAPE = "postgres://USER:PASSWORD@HOST:PORT/DATABASE (or @/DATABASE?host=/SOCKET/DIR)"


@dataclass(frozen=True)
class ConnInfo:
    """One login to one database of one server."""

    host: str  # a host name, an address, or a directory holding the unix socket
    port: int
    user: str
    dbname: str
    password: str = field(default="", repr=False)
    extra: tuple[tuple[str, str], ...] = ()  # sslmode and the like, from EXTRA_PARAMETERS

    def login(self, user: str, password: str, dbname: str) -> "ConnInfo":
        """The same server, another role and database."""
        return replace(self, user=user, password=password, dbname=dbname)

    def database(self, dbname: str) -> "ConnInfo":
        return replace(self, dbname=dbname)

    def keywords(self) -> dict[str, str]:
        """For ``psycopg.connect(**keywords)``."""
        found = {
            "host": self.host,
            "port": str(self.port),
            "user": self.user,
            "dbname": self.dbname,
            "application_name": "dokuen",
            **dict(self.extra),
        }
        if self.password:
            found["password"] = self.password
        return found

    def environ(self) -> dict[str, str]:
        """For pg_dump, pg_restore and psql: the ``PG*`` variables libpq reads."""
        found = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.dbname,
            "PGAPPNAME": "dokuen",
            **{EXTRA_PARAMETERS[key]: value for key, value in self.extra},
        }
        if self.password:
            found["PGPASSWORD"] = self.password
        return found

    def url(self) -> str:
        """``postgres://USER:PASSWORD@HOST:PORT/DB`` (what apps get as DATABASE_URL);
        ``postgresql://USER:PASSWORD@/DB?host=DIR&port=PORT`` for a unix socket's DIR."""
        credentials = quote(self.user, safe="")
        if self.password:
            credentials += ":" + quote(self.password, safe="")
        dbname = quote(self.dbname, safe="")
        if self.host.startswith("/"):
            query = urlencode([("host", self.host), ("port", self.port), *self.extra], safe="/")
            return f"postgresql://{credentials}@/{dbname}?{query}"
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        query = f"?{urlencode(self.extra)}" if self.extra else ""
        return f"postgres://{credentials}@{host}:{self.port}/{dbname}{query}"

    def shown(self) -> str:
        """The URL with the password hidden, for people and logs."""
        url = self.login(self.user, "", self.dbname).url()
        if not self.password:
            return url
        scheme, rest = url.split("://", 1)
        credentials, at, place = rest.partition("@")
        return f"{scheme}://{credentials}:****{at}{place}"


def parse_url(url: str, name: str = "DOKUEN_POSTGRES_URL") -> ConnInfo:
    """Read ``postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=...`` (``postgresql://``
    too; the port defaults to 5432 and the database to ``postgres``).

    Raises:
        SettingsError: naming ``name`` and the shape wanted, never quoting the URL (it
            holds a password).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SettingsError(f"{name} must be a URL like {_SHAPE}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise SettingsError(f"{name} has a port that is not a number (want {_SHAPE})") from None
    host = unquote(parts.hostname or "")
    extra = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "host" and not host and value.startswith("/"):
            host = value
        elif key == "port" and not parts.port and value.isdigit() and 0 < int(value) < 65536:
            port = int(value)
        elif key in EXTRA_PARAMETERS:
            extra.append((key, value))
        else:
            known = ", ".join(EXTRA_PARAMETERS)
            raise SettingsError(
                f"{name}: unknown parameter {key!r} (known: {known}; host=/DIR and port=N "
                "only for a unix socket, with no host before the database)"
            )
    if not host or not parts.username:
        raise SettingsError(f"{name} needs a user and a host: {_SHAPE}")
    return ConnInfo(
        host=host,
        port=port,
        user=unquote(parts.username),
        dbname=unquote(parts.path.lstrip("/")) or "postgres",
        password=unquote(parts.password or ""),
        extra=tuple(extra),
    )
