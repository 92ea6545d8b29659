"""``dokuenctl certs`` and ``certs:*``: an app's HTTPS certificate, added by hand or obtained
(and renewed) from an ACME CA, and the redirect to HTTPS and HSTS."""

import datetime
import time
from pathlib import Path
from typing import Any

import click

from dokuen.cli.arguments import APP, JSON, print_json
from dokuen.cli.console import Client, duration, pass_client
from dokuen.errors import DokuenError

SWITCH = click.argument("state", type=click.Choice(["on", "off"]), default="on")
MAX_PEM = 1 << 20


def _read_pem(path: Path, what: str) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PEM + 1)
    except OSError as exc:
        raise DokuenError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if len(data) > MAX_PEM:
        raise DokuenError(f"{path} is over {MAX_PEM} bytes: not a PEM {what} file")
    return data.decode("ascii", errors="replace")


def show_info(client: Client, info: dict[str, Any]) -> None:
    """The certificate, its renewal and a failure, in a few lines."""
    app, cert = info["app"], info["certificate"]
    how = "obtained and renewed from the ACME CA" if info["auto"] else "added by hand"
    if cert is None:
        wanted = " (certs:auto is on: one is on its way)" if info["auto"] else ""
        client.echo(f"{app}: no certificate, HTTP only{wanted}")
    else:
        expires = datetime.datetime.fromisoformat(cert["not_after"])
        left = expires.timestamp() - time.time()
        client.echo(f"{app}: certificate {how if cert['source'] == 'acme' else 'added by hand'}")
        client.echo(f"  names     {', '.join(cert['names'])}")
        client.echo(f"  issuer    {cert['issuer']}")
        state = f"in {duration(left)}" if left > 0 else "EXPIRED"
        client.echo(f"  expires   {expires:%Y-%m-%d %H:%M} UTC ({state})")
        if info["auto"]:
            renew = datetime.datetime.fromisoformat(cert["renew_at"])
            client.echo(f"  renews    from {renew:%Y-%m-%d %H:%M} UTC")
    client.echo(
        f"  redirect  {'on' if info['redirect'] else 'off'}, hsts {'on' if info['hsts'] else 'off'}"
    )
    failing = info.get("failing")
    if failing:
        next_try = duration(max(0.0, failing["next_try"] - time.time()))
        client.echo(
            f"FAILING since {duration(time.time() - failing['since'])} ago "
            f"({failing['attempts']} attempt{'' if failing['attempts'] == 1 else 's'}, "
            f"next in {next_try}): {failing['error']}",
            err=True,
        )


@click.command()
@APP
@JSON
@pass_client
def certs(client: Client, app: str, as_json: bool) -> None:
    """An app's certificate: names, issuer, expiry, renewal."""
    info = client.call("certs", app=app)
    if as_json:
        print_json(info)
    else:
        show_info(client, info)


@click.command("certs:add")
@APP
@click.argument("cert", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("key", type=click.Path(dir_okay=False, path_type=Path))
@pass_client
def certs_add(client: Client, app: str, cert: Path, key: Path) -> None:
    """Serve APP over HTTPS with your own certificate (CERT: PEM, the chain after it)."""
    client.check("certs:add", {"app": app})  # over ssh: refused before a file is read
    info = client.call(
        "certs:add", app=app, cert=_read_pem(cert, "certificate"), key=_read_pem(key, "key")
    )
    show_info(client, info)


@click.command("certs:remove")
@APP
@pass_client
def certs_remove(client: Client, app: str) -> None:
    """Stop serving APP over HTTPS (and stop obtaining certificates for it)."""
    client.call("certs:remove", app=app)
    client.echo(f"{app} no longer has a certificate: HTTP only")


@click.command("certs:auto")
@APP
@SWITCH
@pass_client
def certs_auto(client: Client, app: str, state: str) -> None:
    """Obtain APP's certificate from the ACME CA now, and renew it (off: stop renewing)."""
    if state == "on":
        client.echo(f"obtaining a certificate for {app}...", err=True)
    show_info(client, client.call("certs:auto", app=app, on=state == "on"))


@click.command("certs:renew")
@APP
@pass_client
def certs_renew(client: Client, app: str) -> None:
    """Renew APP's certificate from the ACME CA now, whatever its expiry."""
    show_info(client, client.call("certs:renew", app=app))


@click.command("certs:redirect")
@APP
@SWITCH
@pass_client
def certs_redirect(client: Client, app: str, state: str) -> None:
    """Redirect APP's plain HTTP to HTTPS (301), the ACME challenges excepted."""
    client.call("certs:redirect", app=app, on=state == "on")
    client.echo(f"{app}: HTTP to HTTPS redirect {state}")


@click.command("certs:hsts")
@APP
@SWITCH
@pass_client
def certs_hsts(client: Client, app: str, state: str) -> None:
    """Send Strict-Transport-Security on APP's HTTPS answers (browsers then refuse HTTP)."""
    client.call("certs:hsts", app=app, on=state == "on")
    client.echo(f"{app}: HSTS {state}")


@click.command("certs:backup")
@APP
@pass_client
def certs_backup(client: Client, app: str) -> None:
    """Store APP's certificate, key and ACME account key in DOKUEN_BACKUP_URL now."""
    stored = client.call("certs:backup", app=app)
    client.echo(f"stored {stored['key']}")


@click.command("certs:restore")
@APP
@click.argument("backup_id", required=False)
@pass_client
def certs_restore(client: Client, app: str, backup_id: str | None) -> None:
    """Serve APP's certificate from the backup target again (BACKUP_ID: default newest)."""
    info = client.call("certs:restore", app=app, id=backup_id)
    client.echo(f"restored certificate backup {info['restored']} of {app}")
    show_info(client, info)
    for warning in info.get("warnings") or []:
        client.echo(f"warning: {warning}", err=True)


COMMANDS = (
    certs,
    certs_add,
    certs_remove,
    certs_auto,
    certs_renew,
    certs_redirect,
    certs_hsts,
    certs_backup,
    certs_restore,
)
