"""``dokuenctl domains`` and ``domains:*``: the host names an app answers on."""

import click

from dokuen.cli.arguments import APP, checked
from dokuen.cli.console import Client, pass_client
from dokuen.names import check_domain


@click.command()
@APP
@pass_client
def domains(client: Client, app: str) -> None:
    """The host names an app answers on: APP.DOKUEN_DOMAIN, then its own."""
    for host in client.call("domains", app=app):
        client.echo(host)


@click.command("domains:add")
@APP
@click.argument("domain", callback=checked(check_domain))
@pass_client
def domains_add(client: Client, app: str, domain: str) -> None:
    """Let an app answer on another host name too."""
    client.call("domains:add", app=app, domain=domain)
    client.echo(f"{app} now answers on {domain}")


@click.command("domains:remove")
@APP
@click.argument("domain", callback=checked(check_domain))
@pass_client
def domains_remove(client: Client, app: str, domain: str) -> None:
    """Stop an app answering on one of its host names."""
    client.call("domains:remove", app=app, domain=domain)
    client.echo(f"{app} no longer answers on {domain}")


COMMANDS = (domains, domains_add, domains_remove)
