"""``dokuenctl``: drive dokuend over its control socket.

This module is the ``main`` group and the one place that maps errors to exit codes; the
commands live in a module per part of the product, each listing them in ``COMMANDS``.
"""

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from dokuen import __version__
from dokuen.cli import (
    apps,
    backups,
    certs,
    config,
    databases,
    domains,
    export,
    hooks,
    maintenance,
    releases,
    service,
    sshkeys,
    status,
)
from dokuen.cli.console import Client
from dokuen.cli.terminal import printable
from dokuen.errors import DokuenError, InvalidName, explain
from dokuen.service.account import client_socket


def fail(message: str, code: int = 1) -> NoReturn:
    # An error may quote what an app wrote (a build's last lines): made safe, always.
    click.echo(f"error: {printable(message)}", err=True)
    sys.exit(code)


def usage_line(exc: click.UsageError) -> str:
    """click's usage error in one line, not its usage block: a bad value already says
    the fix; a missing argument or an unknown option points at the command's help."""
    if isinstance(exc, click.BadParameter) and not isinstance(exc, click.MissingParameter):
        return exc.format_message()
    command = exc.ctx.command_path if exc.ctx else "dokuenctl"
    return f"{exc.format_message().rstrip('.')} (see: {command} --help)"


class Group(click.Group):
    """Maps errors to exit codes, in one place: a wrong request (InvalidName, or a usage
    error click found) is one ``error: ...`` line, exit 2; DokuenError and any other
    failure are ``error: ...`` in one line, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InvalidName as exc:  # a bad name, count or argument: a usage error
            fail(str(exc), 2)
        except DokuenError as exc:
            fail(str(exc))
        except BrokenPipeError:
            sys.stderr.close()  # `dokuenctl logs | head` is not an error
            sys.exit(0)
        except KeyboardInterrupt:  # one line, not click's "Aborted!" or a traceback
            click.echo(f"\ninterrupted: dokuenctl {ctx.invoked_subcommand} stopped", err=True)
            sys.exit(130)
        except click.UsageError as exc:
            fail(usage_line(exc), 2)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click says them and exits
        except Exception as exc:  # a failed system call or a bug: one line, no traceback
            fail(explain(exc))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    help="dokuend's state directory (default: $DOKUEN_HOME).",
)
@click.option(
    "--socket",
    type=click.Path(dir_okay=False, path_type=Path),
    help="dokuend's control socket (default: $DOKUEN_SOCKET, else HOME/dokuend.sock).",
)
@click.version_option(__version__, prog_name="dokuenctl")
@click.pass_context
def main(ctx: click.Context, home: Path | None, socket: Path | None) -> None:
    """Drive dokuend: deploy apps, scale and restart their processes, read their logs."""
    if isinstance(ctx.obj, Client):
        return  # ssh-serve's, for an ssh key (which gives no options: ssh/command.py)
    ctx.obj = Client(socket.absolute() if socket else client_socket(os.environ, home))


COMMAND_MODULES = (
    status,
    apps,
    releases,
    config,
    domains,
    certs,
    maintenance,
    sshkeys,
    hooks,
    backups,
    databases,
    service,
    export,
)
for module in COMMAND_MODULES:
    for command in module.COMMANDS:
        main.add_command(command)
