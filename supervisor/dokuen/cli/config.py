"""``dokuenctl config`` and ``config:*``: an app's config vars."""

import click

from dokuen.cli.arguments import APP, JSON, checked, print_json
from dokuen.cli.console import Client, pass_client
from dokuen.errors import DokuenError
from dokuen.names import check_config_key, check_settable_config_key


@click.command()
@APP
@JSON
@pass_client
def config(client: Client, app: str, as_json: bool) -> None:
    """Show an app's config vars."""
    values = client.call("config", app=app)
    if as_json:
        print_json(values)
        return
    for key, value in sorted(values.items()):
        client.write(f"{key}={value}\n")


@click.command("config:get")
@APP
@click.argument("key", callback=checked(check_config_key))
@pass_client
def config_get(client: Client, app: str, key: str) -> None:
    """Print one config var's value."""
    client.write(client.call("config:get", app=app, key=key) + "\n")


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="KEY=VALUE")
    try:
        return check_settable_config_key(key), value
    except DokuenError as exc:
        raise click.BadParameter(str(exc), param_hint="KEY=VALUE") from None


@click.command("config:set")
@APP
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@pass_client
def config_set(client: Client, app: str, pairs: tuple[str, ...]) -> None:
    """Set config vars and restart the app's processes."""
    values = dict(_pair(pair) for pair in pairs)
    done = client.call("config:set", app=app, values=values)
    client.echo(f"set {', '.join(values)} on {app}{_restarted(app, done['restarted'])}")


@click.command("config:unset")
@APP
@click.argument(
    "keys", nargs=-1, required=True, metavar="KEY...", callback=checked(check_config_key)
)
@pass_client
def config_unset(client: Client, app: str, keys: tuple[str, ...]) -> None:
    """Remove config vars and restart the app's processes."""
    done = client.call("config:unset", app=app, keys=list(keys))
    client.echo(f"unset {', '.join(keys)} on {app}{_restarted(app, done['restarted'])}")


def _restarted(app: str, restarted: bool) -> str:
    if restarted:
        return "; its processes restarted"
    return f" (no process of {app} runs now: its next deploy or start uses it)"


COMMANDS = (config, config_get, config_set, config_unset)
