"""``dokuenctl service:install`` and ``service:uninstall``: dokuend as the system service.

They work without dokuend running: they talk to systemd or launchd, not to the daemon.
"""

import os
from pathlib import Path

import click

from dokuen.cli.console import Client, pass_client
from dokuen.service import install

KIND_SYSTEMD = click.option(
    "--systemd", "kind", flag_value=install.SYSTEMD, help="A systemd unit (the default on Linux)."
)
KIND_LAUNCHD = click.option(
    "--launchd", "kind", flag_value=install.LAUNCHD, help="A launchd job (the default on macOS)."
)
PER_USER = click.option(
    "--user",
    "per_user",
    is_flag=True,
    help="A service of your own user (systemd user unit, LaunchAgent): no root needed.",
)
# Where the unit or plist goes, for tests and packagers: the default is where the service
# manager reads it.
UNIT_DIR = click.option("--unit-dir", type=click.Path(file_okay=False, path_type=Path), hidden=True)


def _not_over_ssh(client: Client, command: str) -> None:
    # These write the service manager's files and run it as the platform's account: the
    # machine's administration, done on the machine.
    client.refuse_over_ssh(
        command, f"{command} is not available over ssh (run it on the server, as root)"
    )


def _say(text: str) -> None:
    click.echo(text, err=text.startswith("warning: "))


@click.command("service:install")
@KIND_SYSTEMD
@KIND_LAUNCHD
@click.option(
    "--print", "print_only", is_flag=True, help="Print the unit or plist; change nothing."
)
@PER_USER
@UNIT_DIR
@pass_client
def service_install(
    client: Client, kind: str | None, print_only: bool, per_user: bool, unit_dir: Path | None
) -> None:
    """Install dokuend as the system service, enable it and start it.

    Under systemd it runs as the dokuen user (created if missing) with its state in
    /var/lib/dokuen; under launchd as a LaunchDaemon. Every app comes back at its formation
    whenever the service starts.
    """
    _not_over_ssh(client, "service:install")
    service = install.describe(kind or install.default_kind(), per_user, unit_dir, os.environ)
    if print_only:
        click.echo(install.render_service(service), nl=False)
        return
    install.install(service, os.environ, _say)


@click.command("service:uninstall")
@KIND_SYSTEMD
@KIND_LAUNCHD
@click.option(
    "--purge",
    is_flag=True,
    help="Delete the state too (every app, release and log) and the dokuen user.",
)
@PER_USER
@UNIT_DIR
@pass_client
def service_uninstall(
    client: Client, kind: str | None, purge: bool, per_user: bool, unit_dir: Path | None
) -> None:
    """Stop dokuend (and so every app), disable it and remove its unit or plist.

    The state (apps, releases, config, logs) is kept unless --purge.
    """
    _not_over_ssh(client, "service:uninstall")
    service = install.describe(kind or install.default_kind(), per_user, unit_dir, os.environ)
    install.uninstall(service, purge, os.environ, _say)


COMMANDS = (service_install, service_uninstall)
