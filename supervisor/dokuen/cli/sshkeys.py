"""``dokuenctl ssh-keys`` and ``ssh-keys:*``: the keys that may git push and run dokuenctl
over ssh."""

from typing import BinaryIO

import click

from dokuen.cli.arguments import JSON, checked, print_json
from dokuen.cli.console import Client, pass_client
from dokuen.names import check_ssh_key_name


@click.command("ssh-keys")
@JSON
@pass_client
def ssh_keys(client: Client, as_json: bool) -> None:
    """The ssh keys that may git push (and run dokuenctl) over ssh."""
    listing = client.call("ssh-keys")
    if as_json:
        print_json(listing["keys"])
        return
    if not listing["keys"]:
        click.echo("no ssh keys yet (add one: dokuenctl ssh-keys:add NAME ~/.ssh/id_ed25519.pub)")
    else:
        rows = [[k["name"], k["type"], k["fingerprint"]] for k in listing["keys"]]
        client.table(["NAME", "TYPE", "FINGERPRINT"], rows)
    if listing["others"]:
        click.echo(
            f"note: {listing['file']} also has {listing['others']} line(s) dokuen did not "
            "write; they are kept as they are",
            err=True,
        )


@click.command("ssh-keys:add")
@click.argument("name", callback=checked(check_ssh_key_name))
@click.argument("keyfile", type=click.File("rb"))
@pass_client
def ssh_keys_add(client: Client, name: str, keyfile: BinaryIO) -> None:
    """Let the public key in KEYFILE (- for stdin) git push and run dokuenctl over ssh."""
    from dokuen.ssh.keys import MAX_KEY_TEXT  # noqa: PLC0415 (hashlib and co. only here)

    text = keyfile.read(MAX_KEY_TEXT + 1).decode(errors="replace")
    added = client.call("ssh-keys:add", name=name, key=text)
    click.echo(f"added ssh key {name} ({added['type']} {added['fingerprint']})")


@click.command("ssh-keys:remove")
@click.argument("name", callback=checked(check_ssh_key_name))
@pass_client
def ssh_keys_remove(client: Client, name: str) -> None:
    """Take an ssh key's access away."""
    client.call("ssh-keys:remove", name=name)
    click.echo(f"removed ssh key {name}")


COMMANDS = (ssh_keys, ssh_keys_add, ssh_keys_remove)
