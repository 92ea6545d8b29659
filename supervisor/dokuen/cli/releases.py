"""``dokuenctl releases``, ``releases:info``, ``releases:output`` and ``rollback``: an app's
kept releases."""

from typing import Any

import click

from dokuen.cli.arguments import APP, JSON, print_json
from dokuen.cli.console import Client, pass_client
from dokuen.cli.terminal import one_line


@click.command()
@APP
@JSON
@pass_client
def releases(client: Client, app: str, as_json: bool) -> None:
    """An app's kept releases, newest first."""
    listing = client.call("releases", app=app)
    if as_json:
        print_json(listing)
        return
    rows = [
        [
            r["version"],
            r.get("description") or "-",
            r["created"] or "-",
            (r["commit"] or "-")[:7],  # git's short form, as in "Deploy 1a2b3c4"
            ", ".join(r["buildpacks"]) or "-",
            " ".join(r["process_types"]),
            "current" if r["current"] else "pending" if r.get("pending") else _failed(r),
        ]
        for r in listing
    ]
    client.table(["RELEASE", "DESCRIPTION", "CREATED", "COMMIT", "BUILDPACKS", "TYPES", ""], rows)


def _failed(row: dict[str, Any]) -> str:
    return "failed" if row.get("failed") else ""


@click.command("releases:info")
@APP
@click.argument("release", metavar="vN")
@JSON
@pass_client
def releases_info(client: Client, app: str, release: str, as_json: bool) -> None:
    """One release whole: when and from what it was made, its process types' commands."""
    info = client.call("releases:info", app=app, release=release)
    if as_json:
        print_json(info)
        return
    client.echo(f"=== {app} {info['version']}{' (current)' if info['current'] else ''}")
    client.echo(f"description {info.get('description') or '-'}")
    client.echo(f"slug        {info.get('slug') or info['version']}")
    client.echo(f"created     {info['created'] or '-'}")
    client.echo(f"commit      {info['commit'] or '-'}")
    client.echo(f"buildpacks  {', '.join(info['buildpacks']) or '-'}")
    if info.get("failed"):
        client.echo(one_line(f"failed      {info['failed']}"))
    for process_type, command in info["process_types"].items():
        client.echo(one_line(f"{process_type + ':':<11} {command}"))


@click.command("releases:output")
@APP
@click.argument("release", required=False, metavar="[vN]")
@pass_client
def releases_output(client: Client, app: str, release: str | None) -> None:
    """The build output of a release (default: the current one)."""
    client.write(client.call("releases:output", app=app, release=release))


@click.command()
@APP
@click.argument("release", required=False, metavar="[vN]")
@click.option("--force", is_flag=True, help="Roll back to vN even if it failed to boot.")
@pass_client
def rollback(client: Client, app: str, release: str | None, force: bool) -> None:
    """Run an earlier release's code and config again as a new release (default: the newest
    one before the current that did not fail to boot), no build."""
    result = client.call("rollback", app=app, release=release, force=force)
    client.echo(f"{app} {result['release']} is running (rollback to {result['target']})")


COMMANDS = (releases, releases_info, releases_output, rollback)
