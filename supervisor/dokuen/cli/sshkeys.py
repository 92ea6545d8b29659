"""``dokuenctl ssh-keys`` and ``ssh-keys:*``: the keys that may git push and run dokuenctl
over ssh."""

import sys
from pathlib import Path

import click

from dokuen.cli.arguments import JSON, app_name, checked, print_json
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
        client.echo("no ssh keys yet (add one: dokuenctl ssh-keys:add NAME ~/.ssh/id_ed25519.pub)")
    else:
        rows = [
            [k["name"], k["type"], k["fingerprint"], ", ".join(k["apps"]) or "all (admin)"]
            for k in listing["keys"]
        ]
        client.table(["NAME", "TYPE", "FINGERPRINT", "APPS"], rows)
    if listing["others"]:
        client.echo(
            f"note: {listing['file']} also has {listing['others']} line(s) dokuen did not "
            "write; they are kept as they are",
            err=True,
        )


@click.command("ssh-keys:add")
@click.argument("name", callback=checked(check_ssh_key_name))
@click.argument("keyfile")
@click.option(
    "--app",
    "apps",
    multiple=True,
    callback=app_name,
    metavar="APP",
    help="Limit the key to APP (repeat for more apps); without: an admin key.",
)
@pass_client
def ssh_keys_add(client: Client, name: str, keyfile: str, apps: tuple[str, ...]) -> None:
    """Let the public key in KEYFILE (- for stdin) git push and run dokuenctl over ssh:
    every command, or with --app only pushes to and commands on those apps."""
    from dokuen.ssh.keys import MAX_KEY_TEXT  # noqa: PLC0415 (hashlib and co. only here)

    if keyfile == "-":
        data = sys.stdin.buffer.read(MAX_KEY_TEXT + 1)
    else:
        # Over ssh a path would be one of the server's, read as the platform's account.
        client.refuse_over_ssh(
            "ssh-keys:add",
            "ssh-keys:add over ssh reads the key from stdin, not a file on the server: "
            f"ssh dokuen@HOST dokuenctl ssh-keys:add {name} - < KEYFILE.pub",
        )
        try:
            with Path(keyfile).open("rb") as file:
                data = file.read(MAX_KEY_TEXT + 1)
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {keyfile!r}: {exc.strerror}", param_hint="'KEYFILE'"
            ) from None
    added = client.call(
        "ssh-keys:add", name=name, key=data.decode(errors="replace"), apps=list(apps)
    )
    scope = f", only for {', '.join(added['apps'])}" if added["apps"] else ""
    client.echo(f"added ssh key {name} ({added['type']} {added['fingerprint']}{scope})")


@click.command("ssh-keys:remove")
@click.argument("name", callback=checked(check_ssh_key_name))
@pass_client
def ssh_keys_remove(client: Client, name: str) -> None:
    """Take an ssh key's access away."""
    client.call("ssh-keys:remove", name=name)
    client.echo(f"removed ssh key {name}")


COMMANDS = (ssh_keys, ssh_keys_add, ssh_keys_remove)
