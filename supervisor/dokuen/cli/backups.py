"""``dokuenctl backups`` and ``backups:*``: an app's database dumps and repository bundles
in the backup target (DOKUEN_BACKUP_URL), taken by hand or on a schedule."""

import base64
import contextlib
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from dokuen.cli.arguments import APP, JSON, app_name, checked, print_json
from dokuen.cli.console import Client, pass_client, size
from dokuen.errors import DokuenError
from dokuen.names import check_app_name, check_backup_id

BACKUP_ID = click.argument(
    "backup_id", metavar="[ID]", required=False, callback=checked(check_backup_id)
)


def _verified(backup: dict[str, Any]) -> str:
    verification = backup.get("verified")
    if verification is None:
        return "-"
    return ("ok " if verification["ok"] else "FAILED ") + str(verification["checked"])


@click.command("backups")
@APP
@JSON
@pass_client
def backups(client: Client, app: str, as_json: bool) -> None:
    """APP's database backups in DOKUEN_BACKUP_URL, oldest first."""
    listing = client.call("backups", app=app)
    if as_json:
        print_json(listing)
        return
    if not listing:
        client.echo(f"no backups of {app} yet (take one: dokuenctl backups:capture {app})")
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
    described = f"{size(backup['size'])}, {len(backup['tables'])} tables, {backup['rows']} rows"
    return described + (", its certificate" if backup.get("certificate_sha256") else "")


@click.command("backups:capture")
@click.argument("app", required=False, callback=app_name)
@click.option("--repo", is_flag=True, help="A git bundle of APP's repository, not its database.")
@click.option("--all", "every", is_flag=True, help="Every app's database and repository.")
@click.option("--verify", is_flag=True, help="Restore each backup from the target to check it.")
@pass_client
def backups_capture(client: Client, app: str | None, repo: bool, every: bool, verify: bool) -> None:
    """Dump APP's database into DOKUEN_BACKUP_URL (--repo: bundle its repository; --all:
    every app's database and repository)."""
    if (app is None) != every:
        raise click.UsageError("give an APP or --all, not both")
    if not (repo or every):
        backup = client.call("backups:capture", app=app)
        client.echo(f"captured backup {backup['id']} of {app} ({_described(backup)})")
        if verify:
            client.call("backups:verify", app=app, id=backup["id"])
            client.echo(f"backup {backup['id']} of {app} is good: verified by a restore")
        return
    results = client.call(
        "backups:capture-repo", app=app, all=every, verify=verify, databases=every
    )
    for result in results:
        if result["ok"]:
            checked_ = ", verified by a restore" if result.get("verified") else ""
            client.echo(f"{result['app']}: stored {result['key']}{checked_}")
        elif result["ok"] is None:
            client.echo(f"{result['app']}: skipped, {result['error']}")
        else:
            client.echo(f"{result['app']}: FAILED: {result['error']}", err=True)
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
@pass_client
def backups_restore(
    client: Client,
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
    certificate = ", with its certificate" if backup.get("certificate") else ""
    client.echo(
        f"restored backup {backup['id']} of {backup['app']} into {app}{certificate}{restarted}"
    )
    for warning in backup.get("warnings") or []:
        client.echo(f"warning: {warning}", err=True)


@click.command("backups:verify")
@APP
@BACKUP_ID
@pass_client
def backups_verify(client: Client, app: str, backup_id: str | None) -> None:
    """Restore a backup (default: the newest) into a scratch database and check it."""
    backup = client.call("backups:verify", app=app, id=backup_id)
    seconds = backup["verified"]["seconds"]
    client.echo(
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
    help="Where to write the dump (- for stdout; default: APP-ID.dump here, and stdout "
    "over ssh). An existing file is never overwritten.",
)
@pass_client
def backups_download(client: Client, app: str, backup_id: str | None, output: Path | None) -> None:
    """Copy a backup's dump (pg_dump's custom format; default: the newest) to a file, or
    to stdout: over ssh, ssh dokuen@HOST dokuenctl backups:download APP > APP.dump."""
    if client.remote is not None and output is None:
        output = Path("-")  # over ssh the client's side is stdout, never a server file
    if str(output) != "-":
        client.refuse_over_ssh(
            "backups:download",
            "backups:download -o PATH over ssh would write a file on the server; the dump "
            f"streams to stdout instead: ssh dokuen@HOST dokuenctl backups:download {app} "
            f"> {app}.dump",
        )
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
        client.echo(f"wrote backup {backup['id']} of {app} to {where} ({size(backup['size'])})")


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


def _cron(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from dokuen.backup.schedule import check_cron  # noqa: PLC0415 (croniter only here)

    try:
        return check_cron(value)
    except DokuenError as exc:
        raise click.BadParameter(str(exc)) from None


def _run_line(record: dict[str, Any] | None, what: str) -> str:
    if record is None:
        return f"{what:<12}never"
    if not record["ok"]:
        return f"{what:<12}{record['at']}: FAILED: {record['error']}"
    checked = ", verified by a restore" if record["verified"] else ""
    return f"{what:<12}{record['at']}: stored {record['id']}{checked}"


@click.command("backups:schedule")
@APP
@click.argument("cron", required=False, callback=_cron, metavar="[CRON]")
@click.option(
    "--keep",
    type=click.IntRange(1),
    metavar="N",
    help="Keep the N newest database dumps and repository bundles; delete older ones.",
)
@click.option(
    "--verify-every",
    type=click.IntRange(1),
    metavar="N",
    help="Restore-check every Nth scheduled backup (default: each one).",
)
@click.option("--off", is_flag=True, help="Stop backing APP up on a schedule.")
@JSON
@pass_client
def backups_schedule(
    client: Client,
    app: str,
    cron: str | None,
    keep: int | None,
    verify_every: int | None,
    off: bool,
    as_json: bool,
) -> None:
    """Back APP up on a cron schedule ("0 3 * * *": 03:00 every day, in this machine's time
    zone); without one, show its schedule and last backups."""
    if off and (cron or keep or verify_every):
        raise click.UsageError("--off takes no schedule")
    if cron is None and (keep or verify_every):
        raise click.UsageError(f'give the schedule too: backups:schedule {app} "0 3 * * *"')
    args: dict[str, Any] = {"app": app, "off": off}
    if cron is not None:
        args |= {"cron": cron, "keep": keep, "verify_every": verify_every or 1}
    info = client.call("backups:schedule", **args)
    if as_json:
        print_json(info)
        return
    schedule = info["schedule"]
    if schedule is None:
        client.echo(f"{app}: no backup schedule" + (" (removed)" if off else ""))
    else:
        keeping = f"keeping the {schedule['keep']} newest" if schedule["keep"] else "keeping all"
        every = schedule["verify_every"]
        checking = "verifying each one" if every == 1 else f"verifying every {every}th"
        client.echo(
            f'{app}: backups at "{schedule["cron"]}" ({schedule["zone"]}), {keeping}, {checking}'
        )
        client.echo(f"{'next run':<12}{schedule['next_run']}")
    client.echo(f"{'target':<12}{info['target'] or 'none: set DOKUEN_BACKUP_URL in dokuend.env'}")
    client.echo(_run_line(info["scheduled"], "last run"))
    client.echo(_run_line(info["bundle"], "last bundle"))


COMMANDS = (
    backups,
    backups_capture,
    backups_restore,
    backups_verify,
    backups_download,
    backups_schedule,
)
