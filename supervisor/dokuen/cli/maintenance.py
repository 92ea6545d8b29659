"""``dokuenctl maintenance``, ``maintenance:on`` and ``maintenance:off`` (Heroku's names):
nginx answers 503 with a plain page for the app while its processes keep running."""

import click

from dokuen.cli.arguments import APP
from dokuen.cli.console import Client, pass_client


@click.command()
@APP
@pass_client
def maintenance(client: Client, app: str) -> None:
    """Print whether the app is in maintenance mode: on or off."""
    click.echo("on" if client.call("maintenance", app=app)["maintenance"] else "off")


@click.command("maintenance:on")
@APP
@pass_client
def maintenance_on(client: Client, app: str) -> None:
    """Answer every request for the app with 503 and a page; its processes keep running."""
    client.call("maintenance:on", app=app)
    click.echo(f"Enabling maintenance mode for {app}... done")


@click.command("maintenance:off")
@APP
@pass_client
def maintenance_off(client: Client, app: str) -> None:
    """Serve the app again."""
    client.call("maintenance:off", app=app)
    click.echo(f"Disabling maintenance mode for {app}... done")


COMMANDS = (maintenance, maintenance_on, maintenance_off)
