"""Each app's own PostgreSQL database: a role with a random password that owns a database
of the same name (``app_`` and the app's name, ``-`` as ``_``), which no other role may
connect to. ``$DOKUEN_HOME/apps/APP/database.json`` (0600) records it, so dokuend knows
its database even when someone changes the app's DATABASE_URL.

Names go into SQL only as ``psycopg.sql.Identifier`` and passwords only as SCRAM
verifiers made here (``PASSWORD 'SCRAM-SHA-256$...'``), so a plain password never reaches
the server, its logs, or a shell.
"""

import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dokuen.conninfo import ConnInfo
from dokuen.errors import Conflict, DokuenError, SettingsError
from dokuen.names import check_app_name
from dokuen.store import AppDir, write_atomic

if TYPE_CHECKING:
    import psycopg

IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
PREFIX = "app_"
SCRATCH_PREFIX = "dokuen_verify_"


class PostgresError(DokuenError):
    """The server refused or failed a statement, or could not be reached."""


def database_name(app: str) -> str:
    """The role and database of ``app``: ``app_blog``; ``app_my_blog`` for ``my-blog``.
    Names past PostgreSQL's 63 bytes end in a hash of the whole app name instead."""
    import hashlib  # noqa: PLC0415 (libcrypto, 3 MiB: not at start)

    name = PREFIX + check_app_name(app).replace("-", "_")
    if len(name) > 63:
        name = f"{name[:54]}_{hashlib.sha256(app.encode()).hexdigest()[:8]}"
    return check_identifier(name)


def check_identifier(name: str) -> str:
    if not IDENTIFIER.fullmatch(name):
        raise SettingsError(f"invalid database or role name {name!r}")
    return name


def scratch_name() -> str:
    """A database for one verification, never an app's."""
    import secrets  # noqa: PLC0415 (hmac links libcrypto: not at start)

    return f"{SCRATCH_PREFIX}{secrets.token_hex(8)}"


def new_password() -> str:
    import secrets  # noqa: PLC0415 (hmac links libcrypto: not at start)

    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Database:
    """What dokuend made for one app: ``name`` is the role and the database."""

    app: str
    name: str
    password: str = field(repr=False)
    server: str  # managed or external: where it was made
    created: str

    @classmethod
    def new(cls, app: str, server: str) -> "Database":
        created = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(app, database_name(app), new_password(), server, created)


def read_record(directory: AppDir) -> Database | None:
    """The app's database, or None when it has none."""
    try:
        text = directory.database_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        record = Database(**json.loads(text))
        check_identifier(record.name)
        if not all(isinstance(value, str) for value in asdict(record).values()):
            raise ValueError("a value is not text")
    except (ValueError, TypeError, SettingsError) as exc:
        raise SettingsError(f"{directory.database_file}: not a database record ({exc})") from None
    return record


def write_record(directory: AppDir, record: Database) -> None:
    write_atomic(directory.database_file, json.dumps(asdict(record), indent=2) + "\n", 0o600)


def remove_record(directory: AppDir) -> None:
    directory.database_file.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def connect(
    info: ConnInfo, *, wait: float = 10, autocommit: bool = True
) -> AsyncIterator["psycopg.AsyncConnection[Any]"]:
    """A connection; psycopg's errors become PostgresError (they never hold the password)."""
    # psycopg and libpq cost about 20 MiB: loaded only once a database is used.
    import psycopg  # noqa: PLC0415

    conninfo = psycopg.conninfo.make_conninfo(
        "", **info.keywords(), connect_timeout=max(1, round(wait))
    )
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=autocommit)
    except psycopg.Error as exc:
        raise PostgresError(f"cannot connect to PostgreSQL as {info.user}: {_first(exc)}") from None
    try:
        async with conn:
            yield conn
    except psycopg.Error as exc:
        raise PostgresError(f"PostgreSQL: {_first(exc)}") from None


def _first(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


async def create(admin: ConnInfo, record: Database) -> None:
    """Make the role and its database on the server.

    Raises:
        Conflict: the server has a role or database of that name already.
        PostgresError: the server refused (the role is dropped again if the database
            could not be made).
    """
    from psycopg import sql  # noqa: PLC0415

    name = sql.Identifier(record.name)
    async with connect(admin) as conn:
        for kind, catalog, column in (
            ("role", "pg_roles", "rolname"),
            ("database", "pg_database", "datname"),
        ):
            query = sql.SQL("SELECT 1 FROM {} WHERE {} = %s").format(
                sql.Identifier(catalog), sql.Identifier(column)
            )
            if await (await conn.execute(query, [record.name])).fetchone():
                raise Conflict(
                    f"the PostgreSQL server already has a {kind} named {record.name!r} (left "
                    "by an earlier install?); drop it there, or use another app name"
                )
        verifier = conn.pgconn.encrypt_password(
            record.password.encode(), record.name.encode(), b"scram-sha-256"
        ).decode()
        await conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(name, sql.Literal(verifier))
        )
        try:
            superuser = await (
                await conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            ).fetchone()
            if not (superuser and superuser[0]):  # an external admin with CREATEROLE
                await conn.execute(sql.SQL("GRANT {} TO current_user").format(name))
            await conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(name, name))
            await conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(name))
        except BaseException:
            await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(name))
            raise


async def destroy(admin: ConnInfo, name: str) -> None:
    """Drop the database (its sessions are ended) and the role; no error if gone."""
    from psycopg import sql  # noqa: PLC0415

    async with connect(admin) as conn:
        await conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


async def end_sessions(admin: ConnInfo, name: str) -> int:
    """End every session on database ``name`` (before a restore: one that holds a table in
    an open transaction would keep it waiting for ever); returns how many."""
    async with connect(admin) as conn:
        ended = await (
            await conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [check_identifier(name)],
            )
        ).fetchone()
    return int(ended[0]) if ended else 0


async def create_scratch(admin: ConnInfo, owner: str) -> str:
    """An empty database owned by ``owner`` for a verification; returns its name."""
    from psycopg import sql  # noqa: PLC0415

    name = scratch_name()
    async with connect(admin) as conn:
        # One a verification left when dokuend died: its app verifies one at a time, so
        # any of the owner's is left over.
        leftovers = await (
            await conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'dokuen\\_verify\\_%%' "
                "AND datdba = (SELECT oid FROM pg_roles WHERE rolname = %s)",
                [check_identifier(owner)],
            )
        ).fetchall()
        for (leftover,) in leftovers:
            await conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(leftover))
            )
        await conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(check_identifier(owner))
            )
        )
    return name


async def drop_scratch(admin: ConnInfo, name: str) -> None:
    from psycopg import sql  # noqa: PLC0415

    if not name.startswith(SCRATCH_PREFIX):
        raise DokuenError(f"refusing to drop {name!r}: not a verification database")
    async with connect(admin) as conn:
        await conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# The tables whose rows a dump holds: ordinary tables (partitions, not their parents)
# outside the system schemas and not an extension's.
TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (
    SELECT 1 FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""
COUNT_TABLES = "SELECT count(*) FROM (" + TABLES + ") AS tables"  # noqa: S608 (constants)


async def row_counts(conn: "psycopg.AsyncConnection[Any]") -> dict[str, int]:
    """``{"schema.table": rows}`` for every table of the database, as the connection's
    transaction sees it."""
    from psycopg import sql  # noqa: PLC0415

    counts = {}
    for schema, table in await (await conn.execute(TABLES)).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        row = await (await conn.execute(query)).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


async def describe(info: ConnInfo) -> dict[str, Any]:
    """Size, tables, sessions and server version of the database ``info`` logs in to."""
    async with connect(info) as conn:
        row = await (
            await conn.execute(
                "SELECT pg_database_size(current_database()), "
                "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()), "
                "current_setting('server_version')"
            )
        ).fetchone()
        tables = await (await conn.execute(COUNT_TABLES)).fetchone()
    assert row is not None
    assert tables is not None
    return {
        "size": int(row[0]),
        "connections": int(row[1]),
        "server_version": str(row[2]).split()[0],
        "tables": int(tables[0]),
    }
