"""``dokuenctl pg:*`` and ``backups:*``: an app's PostgreSQL database and its backups.

The commands get dokuenctl's ``Client`` as the click context's object.
"""

import base64
import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from dokuen.cli.arguments import APP, JSON, app_name, checked, print_json
from dokuen.errors import DokuenError
from dokuen.names import check_app_name, check_backup_id

if TYPE_CHECKING:
    from dokuen.cli.dokuenctl import Client


BACKUP_ID = click.argument(
    "backup_id", metavar="[ID]", required=False, callback=checked(check_backup_id)
)


def size(count: int) -> str:
    """``512 B``, ``1.5 kB``, ``7.6 MB``, ``1.2 GB`` (powers of 1000, as PostgreSQL)."""
    amount = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            return f"{count} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    raise AssertionError  # the loop returns at GB


@click.command("pg:create")
@APP
@click.pass_obj
def pg_create(client: "Client", app: str) -> None:
    """Create a PostgreSQL database and role for APP and set its DATABASE_URL."""
    result = client.call("pg:create", app=app)
    click.echo(f"created database {result['database']} for {app}")
    restarted = " (its processes restarted with it)" if result["restarted"] else ""
    click.echo(f"DATABASE_URL={result['url']}{restarted}")


@click.command("pg:info")
@APP
@JSON
@click.pass_obj
def pg_info(client: "Client", app: str, as_json: bool) -> None:
    """APP's database: server, size, tables, connections."""
    info = client.call("pg:info", app=app)
    if as_json:
        print_json(info)
        return
    click.echo(f"=== {app}'s database")
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
        click.echo(f"{label:<12} {value}")


@click.command("pg:psql", context_settings={"ignore_unknown_options": True})
@APP
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED, metavar="[PSQL ARGS]...")
@click.pass_obj
def pg_psql(client: "Client", app: str, psql_args: tuple[str, ...]) -> None:
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
@click.pass_obj
def pg_destroy(client: "Client", app: str, confirm: str | None) -> None:
    """Drop APP's database and role, and unset its DATABASE_URL."""
    result = client.call("pg:destroy", app=app, confirm=confirm)
    click.echo(f"destroyed database {result['database']} of {app}")


def _verified(backup: dict[str, Any]) -> str:
    verification = backup.get("verified")
    if verification is None:
        return "-"
    return ("ok " if verification["ok"] else "FAILED ") + str(verification["checked"])


@click.command("backups")
@APP
@JSON
@click.pass_obj
def backups(client: "Client", app: str, as_json: bool) -> None:
    """APP's database backups in DOKUEN_BACKUP_URL, oldest first."""
    listing = client.call("backups", app=app)
    if as_json:
        print_json(listing)
        return
    if not listing:
        click.echo(f"no backups of {app} yet (take one: dokuenctl backups:capture {app})")
        return
    rows = [
        [
            b["id"],
            b["created"],
            size(b["size"]),
            b["release"] or "-",
            f"{len(b['tables'])} tables, {b['rows']} rows",
            _verified(b),
        ]
        for b in listing
    ]
    client.table(["ID", "CREATED", "SIZE", "RELEASE", "CONTENT", "VERIFIED"], rows)


def _described(backup: dict[str, Any]) -> str:
    return f"{size(backup['size'])}, {len(backup['tables'])} tables, {backup['rows']} rows"


@click.command("backups:capture")
@click.argument("app", required=False, callback=app_name)
@click.option("--repo", is_flag=True, help="A git bundle of APP's repository, not its database.")
@click.option("--all", "every", is_flag=True, help="Every app's database and repository.")
@click.option("--verify", is_flag=True, help="Restore each backup from the target to check it.")
@click.pass_obj
def backups_capture(
    client: "Client", app: str | None, repo: bool, every: bool, verify: bool
) -> None:
    """Dump APP's database into DOKUEN_BACKUP_URL (--repo: bundle its repository; --all:
    every app's database and repository)."""
    if (app is None) != every:
        raise click.UsageError("give an APP or --all, not both")
    if not (repo or every):
        backup = client.call("backups:capture", app=app)
        click.echo(f"captured backup {backup['id']} of {app} ({_described(backup)})")
        if verify:
            client.call("backups:verify", app=app, id=backup["id"])
            click.echo(f"backup {backup['id']} of {app} is good: verified by a restore")
        return
    results = client.call(
        "backups:capture-repo", app=app, all=every, verify=verify, databases=every
    )
    for result in results:
        if result["ok"]:
            checked_ = ", verified by a restore" if result.get("verified") else ""
            click.echo(f"{result['app']}: stored {result['key']}{checked_}")
        elif result["ok"] is None:
            click.echo(f"{result['app']}: skipped, {result['error']}")
        else:
            click.echo(f"{result['app']}: FAILED: {result['error']}", err=True)
    if any(result["ok"] is False for result in results):
        sys.exit(1)


@click.command("backups:restore")
@APP
@BACKUP_ID
@click.option(
    "--from",
    "source",
    metavar="OTHER",
    callback=checked(check_app_name),
    help="Restore a backup of app OTHER (needs --force).",
)
@click.option("--confirm", metavar="APP", help="The app's name again, to confirm.")
@click.option("--force", is_flag=True, help="Restore a backup taken from another app.")
@click.pass_obj
def backups_restore(
    client: "Client",
    app: str,
    backup_id: str | None,
    source: str | None,
    confirm: str | None,
    force: bool,
) -> None:
    """Replace the tables of APP's database with a backup's (default: the newest)."""
    backup = client.call(
        "backups:restore", app=app, id=backup_id, confirm=confirm, force=force, source=source
    )
    restarted = "; its processes restarted" if backup["restarted"] else ""
    click.echo(f"restored backup {backup['id']} of {backup['app']} into {app}{restarted}")


@click.command("backups:verify")
@APP
@BACKUP_ID
@click.pass_obj
def backups_verify(client: "Client", app: str, backup_id: str | None) -> None:
    """Restore a backup (default: the newest) into a scratch database and check it."""
    backup = client.call("backups:verify", app=app, id=backup_id)
    seconds = backup["verified"]["seconds"]
    click.echo(
        f"backup {backup['id']} of {app} is good: its checksum, its archive and the rows of "
        f"its {len(backup['tables'])} tables match its manifest ({seconds:g}s)"
    )


@click.command("backups:download")
@APP
@BACKUP_ID
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Where to write the dump (- for stdout; default: APP-ID.dump here). "
    "An existing file is never overwritten.",
)
@click.pass_obj
def backups_download(
    client: "Client", app: str, backup_id: str | None, output: Path | None
) -> None:
    """Copy a backup's dump (pg_dump's custom format; default: the newest) to a file."""
    if output is not None and str(output) != "-" and output.exists():
        raise DokuenError(f"{output} exists; it is not overwritten (choose another -o)")
    with _receiver(output) as (writer, finish):
        digest = hashlib.sha256()

        def receive(text: str) -> None:
            for line in text.splitlines():
                data = base64.b64decode(line)
                digest.update(data)
                writer.write(data)

        backup = client.call("backups:download", receive, app=app, id=backup_id)
        if digest.hexdigest() != backup["sha256"]:
            raise DokuenError(f"the download of {backup['id']} arrived damaged (checksum mismatch)")
        where = finish(output or Path(f"{app}-{backup['id']}.dump"))
    if where is not None:
        click.echo(f"wrote backup {backup['id']} of {app} to {where} ({size(backup['size'])})")


@contextlib.contextmanager
def _receiver(output: Path | None) -> Iterator[tuple[IO[bytes], Any]]:
    """Where the bytes go, and how to finish: stdout, or a temporary file beside the
    target that becomes it (never replacing a file) only once it arrived whole."""
    if output is not None and str(output) == "-":
        yield sys.stdout.buffer, lambda _path: None
        sys.stdout.flush()
        return
    directory = (output or Path()).absolute().parent
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below, in every case)
        dir=directory, prefix=".dokuen-download-", suffix=".partial", delete=False
    )
    temporary = Path(handle.name)

    def finish(target: Path) -> Path:
        handle.close()
        try:
            os.link(temporary, target)  # unlike a rename, refuses to replace a file
        except FileExistsError:
            raise DokuenError(f"{target} exists; it is not overwritten (use -o)") from None
        return target

    try:
        yield handle, finish
    finally:
        handle.close()
        temporary.unlink(missing_ok=True)


COMMANDS = (
    pg_create,
    pg_info,
    pg_psql,
    pg_destroy,
    backups,
    backups_capture,
    backups_restore,
    backups_verify,
    backups_download,
)
