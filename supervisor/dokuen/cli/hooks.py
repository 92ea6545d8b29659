"""The hidden commands that sshd and git run: ``ssh-serve`` (the forced command of every
authorized key), ``git-hook`` (pre-receive: build and deploy) and ``git-post-receive``
(back the repository up)."""

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dokuen.cli import githook
from dokuen.cli.arguments import app_name, checked
from dokuen.cli.console import Client, pass_client
from dokuen.cli.terminal import printable
from dokuen.errors import DokuenError
from dokuen.names import check_ssh_key_name
from dokuen.ssh.command import Ctl, parse_ssh_command
from dokuen.ssh.scope import KeyScope


def _stop_on_signal(signum: int, _frame: object) -> None:
    # SIGTERM/SIGHUP (the pusher went away) become an exit, so `finally` blocks clean up.
    sys.exit(128 + signum)


@click.command("git-hook", hidden=True)
@pass_client
def git_hook(client: Client) -> None:
    """The pre-receive hook of repositories whose hook predates the light one (githook.py):
    the same work, started the heavier way. dokuend rewrites the hooks when it starts."""

    def request(command: str, args: dict[str, Any], on_output: Callable[[str], None]) -> Any:
        return client.call(command, on_output, **args)

    githook.run(request)


@click.command("ssh-serve", hidden=True)
@click.argument("key", callback=checked(check_ssh_key_name))
@click.option("--app", "apps", multiple=True, callback=app_name, help="Limit the key to APP.")
@pass_client
def ssh_serve(client: Client, key: str, apps: tuple[str, ...]) -> None:
    """The forced command of every authorized ssh key: run what SSH_ORIGINAL_COMMAND asks
    for when the key may (ssh/command.py), and refuse everything else. Every request it
    then makes to dokuend passes the key's scope (ssh/scope.py, in Client.call)."""
    remote = Client(client.socket_path, KeyScope(key, tuple(sorted(set(apps)))))
    asked = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    # dokuenctl's main group, found through the context: it imports this module.
    main = click.get_current_context().find_root().command
    assert isinstance(main, click.Group)
    try:
        wanted = parse_ssh_command(asked, main.commands)
    except DokuenError as exc:
        remote.audit_refusal(asked, str(exc))
        raise
    remote.call("ssh:audit", key=key, line=asked, allowed=True)
    if isinstance(wanted, Ctl):
        # The Client main is given carries the key: main never makes another from options.
        main.main(list(wanted.args), prog_name="dokuenctl", obj=remote)
        return
    found = remote.call("git:repo", app=wanted.app, create=True, key=key)
    if found["created"]:
        click.echo(f"-----> Created app {wanted.app} on its first push", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # The ssh session becomes git's: an argv list, no shell, the path from dokuend.
    os.execvp("git", ["git", "receive-pack", found["path"]])  # noqa: S606


@click.command("git-post-receive", hidden=True)
@pass_client
def git_post_receive(client: Client) -> None:
    """The post-receive hook of every app's repository: the push has landed; store a bundle
    of the repository in the backup target. A failure is told, never an error: git could
    not undo the push anyway."""
    from dokuen.deploy.repo import app_of_repo  # noqa: PLC0415 (tarfile and co. only here)

    sys.stdin.read()  # the ref updates: a bundle holds every ref, whichever moved
    client.warn = False  # the pre-receive hook said them; a failure here is said below
    try:
        stored = client.call("backups:capture-repo", app=app_of_repo(Path.cwd()), push=True)
    except DokuenError as exc:
        click.echo(
            f"warning: the push landed, but its backup failed: {printable(str(exc))}", err=True
        )
        return
    for result in stored:
        click.echo(printable(f"-----> Backed up the repository: {result['key']}"))


COMMANDS = (git_hook, ssh_serve, git_post_receive)
