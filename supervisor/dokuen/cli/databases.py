"""``dokuenctl pg:*``: an app's PostgreSQL database."""

import os
import shutil
import sys

import click

from dokuen.cli.arguments import APP, JSON, print_json
from dokuen.cli.console import Client, pass_client, size
from dokuen.errors import DokuenError


@click.command("pg:create")
@APP
@pass_client
def pg_create(client: Client, app: str) -> None:
    """Create a PostgreSQL database and role for APP and set its DATABASE_URL."""
    result = client.call("pg:create", app=app)
    client.echo(f"created database {result['database']} for {app}")
    restarted = " (its processes restarted with it)" if result["restarted"] else ""
    client.echo(f"DATABASE_URL={result['url']}{restarted}")


@click.command("pg:info")
@APP
@JSON
@pass_client
def pg_info(client: Client, app: str, as_json: bool) -> None:
    """APP's database: server, size, tables, connections."""
    info = client.call("pg:info", app=app)
    if as_json:
        print_json(info)
        return
    client.echo(f"=== {app}'s database")
    rows = [
        ("database", f"{info['database']} (its role too)"),
        ("server", f"{info['server']} PostgreSQL {info['server_version']}"),
        ("url", info["url"]),
        ("size", size(info["size"])),
        ("tables", str(info["tables"])),
        ("connections", str(info["connections"])),
        ("created", info["created"]),
    ]
    for label, value in rows:
        client.echo(f"{label:<12} {value}")


@click.command("pg:psql", context_settings={"ignore_unknown_options": True})
@APP
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED, metavar="[PSQL ARGS]...")
@pass_client
def pg_psql(client: Client, app: str, psql_args: tuple[str, ...]) -> None:
    """Run psql on APP's database, here in this terminal (extra arguments go to psql)."""
    found = client.call("pg:connection", app=app)
    psql = found["psql"]
    if not psql or not os.access(psql, os.X_OK):
        psql = shutil.which("psql")
    if psql is None:
        raise DokuenError("psql is not installed here (apt install postgresql-client)")
    sys.stdout.flush()
    # The login travels in PG* variables: no password in argv, no shell between.
    os.execve(psql, [psql, *psql_args], {**os.environ, **found["environ"]})  # noqa: S606


@click.command("pg:destroy")
@APP
@click.option("--confirm", metavar="APP", help="The app's name again, to confirm.")
@pass_client
def pg_destroy(client: Client, app: str, confirm: str | None) -> None:
    """Drop APP's database and role, and unset its DATABASE_URL."""
    result = client.call("pg:destroy", app=app, confirm=confirm)
    client.echo(f"destroyed database {result['database']} of {app}")


COMMANDS = (pg_create, pg_info, pg_psql, pg_destroy)
