"""What every dokuenctl command module shares: checked arguments and JSON output."""

import copy
import json
from collections.abc import Callable
from typing import Any

import click

from dokuen.errors import DokuenError
from dokuen.names import check_app_name, check_new_app_name

Callback = Callable[[click.Context, click.Parameter, Any], Any]


def checked(check: Callable[[str], object]) -> Callback:
    """A click callback that checks a value (or each of several) with a grammar of
    names.py here too: a bad name never leaves this machine, and it is a usage
    error (exit 2) wherever it is given."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        try:
            for each in [] if value is None else [value] if isinstance(value, str) else value:
                check(each)
        except DokuenError as exc:
            raise click.BadParameter(str(exc)) from None
        return value

    return callback


app_name = checked(check_app_name)
APP = click.argument("app", callback=app_name)
NEW_APP = click.argument("app", callback=checked(check_new_app_name))
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def alias(command: click.Command, name: str) -> click.Command:
    """``command`` under a second name, as the Heroku CLI has them (``ps:restart``)."""
    twin = copy.copy(command)
    twin.name = name
    twin.help = f"{command.help} (Same as {command.name}.)"
    return twin
