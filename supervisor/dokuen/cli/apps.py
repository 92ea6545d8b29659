"""``dokuenctl apps``, ``deploy``, ``run``, ``ps``, ``restart``, ``stop``, ``start``, ``open``
and ``logs``: an app's life, its processes and their output."""

import os
import shlex
import sys
import zlib
from pathlib import Path
from typing import Any

import click

from dokuen.cli import attached
from dokuen.cli.arguments import APP, JSON, NEW_APP, alias, app_name, checked, print_json
from dokuen.cli.console import Client, duration, pass_client, size
from dokuen.cli.terminal import printable
from dokuen.errors import NotFound
from dokuen.names import check_new_app_name, parse_process_name

SOURCES = ("app", "dokuen", "router")  # as the daemon's logmux.SOURCES
_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta")


@click.command()
@JSON
@pass_client
def apps(client: Client, as_json: bool) -> None:
    """List apps."""
    listing = client.call("apps")
    if as_json:
        print_json(listing)
        return
    if not listing:
        client.echo("no apps yet (create one: dokuenctl apps:create NAME)")
        return
    rows = []
    for app in listing:
        state = "stopped" if app["stopped"] else f"{app['running']}/{app['processes']} running"
        if app.get("broken"):  # the file that keeps it down, and the fix
            state = f"broken: {app['broken']}"
        elif app["crashed"]:
            state += f", {app['crashed']} crashed"
        if app.get("maintenance"):
            state += ", maintenance"
        formation = " ".join(f"{t}={n}" for t, n in app["formation"].items()) or "-"
        rows.append([app["name"], app["release"] or "-", formation, state, app["url"] or "-"])
    client.table(["APP", "RELEASE", "FORMATION", "STATE", "URL"], rows)


@click.command("apps:info")
@APP
@JSON
@pass_client
def apps_info(client: Client, app: str, as_json: bool) -> None:
    """One app at a glance: release, URL, domains, formation, database, repository, disk."""
    info = client.call("apps:info", app=app)
    if as_json:
        print_json(info)
        return
    formation = " ".join(f"{t}={n}" for t, n in info["formation"].items()) or "-"
    lines = [
        ("release", info["release"] or "- (not deployed yet)"),
        ("url", info["url"] or "-"),
        ("domains", " ".join(info["domains"])),
        ("formation", formation + (" (stopped)" if info["stopped"] else "")),
        ("processes", f"{info['running']}/{info['processes']} running"),
        ("database", f"yes (dokuenctl pg:info {app})" if info["database"] else "none"),
        ("repo", info["repo"]),
        ("disk", f"{info['disk_bytes'] / (1 << 20):.1f} MiB"),
    ]
    client.echo(f"=== {app}")
    for key, value in lines:
        client.echo(f"{key:<10} {value}")


@click.command("apps:create")
@NEW_APP
@pass_client
def apps_create(client: Client, app: str) -> None:
    """Create an app."""
    created = client.call("apps:create", app=app)
    client.echo(f"created {app}; deploy it with: git push {created['repo']} main")
    client.echo(f"  (or from a directory: dokuenctl deploy {app} DIR)")


@click.command("apps:rename")
@APP
@click.argument("new", metavar="NEW", callback=checked(check_new_app_name))
@pass_client
def apps_rename(client: Client, app: str, new: str) -> None:
    """Rename an app: its releases, config, domains, database, backups and repository follow."""
    done = client.call("apps:rename", app=app, new=new)
    click.echo(f"renamed {app} to {new}" + (f": {done['url']}" if done["url"] else ""))
    click.echo("its git remote changed; update yours with:")
    click.echo(f"  git remote set-url dokuen dokuen@HOST:{new}   (over ssh)")
    click.echo(f"  git remote set-url dokuen {done['repo']}   (on this machine)")
    for warning in done["warnings"]:
        click.echo(f"warning: {warning}", err=True)


@click.command("apps:destroy")
@APP
@click.option("--confirm", metavar="APP", help="The app's name again, to confirm.")
@pass_client
def apps_destroy(client: Client, app: str, confirm: str | None) -> None:
    """Stop an app and delete all its state."""
    client.call("apps:destroy", app=app, confirm=confirm)
    client.echo(f"destroyed {app}")


@click.command()
@APP
@click.argument("directory", type=click.Path(path_type=Path))
@pass_client
def deploy(client: Client, app: str, directory: Path) -> None:
    """Make a new release of APP from DIRECTORY and start it."""
    try:
        result = client.call("deploy", app=app, dir=str(directory.absolute()))
    except KeyboardInterrupt:
        click.echo(
            f"\ninterrupted: a deploy called off before its switch changes nothing "
            f"(see: dokuenctl releases {app})",
            err=True,
        )
        sys.exit(130)
    client.echo(f"{app} {result['release']} is running")


# Everything after APP is the command's, options included (run blog ls -la).
_COMMAND_LINE = {"ignore_unknown_options": True, "allow_interspersed_args": False}


def _command_line(command: tuple[str, ...]) -> str:
    return command[0] if len(command) == 1 else shlex.join(command)


@click.command(context_settings=_COMMAND_LINE)
@click.option(
    "--no-tty", is_flag=True, help="No terminal for the process, even on one: pipes only."
)
@APP
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_client
def run(client: Client, no_tty: bool, app: str, command: tuple[str, ...]) -> None:
    """Run COMMAND once in the app's current release and environment, attached: stdin, and
    a terminal when this is one (bash, python, psql work); exit with its code."""
    request = {"app": app, "line": _command_line(command)}
    client.check("run", request)  # over ssh: the key's apps only
    try:
        # The command's own output, as it wrote it (as ssh HOST COMMAND or docker exec
        # would show it): the user chose to run it, and `run APP cat FILE > copy` must work.
        result = attached.run(
            client.socket_path,
            request,
            terminal=attached.wants_terminal(no_tty),
            on_warnings=client.on_warnings,
        )
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(result["status"])


@click.command("run:detached", context_settings=_COMMAND_LINE)
@APP
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_client
def run_detached(client: Client, app: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in the background as run.N, its output in the unified log."""
    line = _command_line(command)
    name = client.call("run:detached", app=app, line=line)["name"]
    client.echo(f"Running {line} on {app}... up, {name}")
    client.echo(f"Run dokuenctl logs {app} --ps {name} to view the output.")


@click.command("ps:stop")
@APP
@click.argument("target", metavar="run.N", callback=checked(parse_process_name))
@pass_client
def ps_stop(client: Client, app: str, target: str) -> None:
    """Stop a detached run (SIGTERM, then SIGKILL after the app's stop timeout)."""
    stopped = client.call("ps:stop", app=app, target=target)
    client.echo(f"Stopping {', '.join(stopped)} process on {app}... done")


def _process_rows(processes: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            p["app"],
            p["name"],
            str(p["pid"] or "-"),
            str(p["port"] or "-"),
            p["state"],
            str(p["restarts"]),
            duration(p["uptime"]),
            "-" if p.get("cpu") is None else f"{p['cpu']:.1f}s",
            "-" if p.get("memory") is None else size(p["memory"]),
            p["command"],
        ]
        for p in processes
    ]


@click.command()
@click.argument("app", required=False, callback=app_name)
@JSON
@pass_client
def ps(client: Client, app: str | None, as_json: bool) -> None:
    """One row per process: app, name, pid, port, state, restarts, uptime, cpu, memory."""
    processes = client.call("ps", app=app)
    if as_json:
        print_json(processes)
        return
    if not processes:
        client.echo("no processes running")
        return
    client.table(
        ["APP", "NAME", "PID", "PORT", "STATE", "RESTARTS", "UPTIME", "CPU", "MEMORY", "COMMAND"],
        _process_rows(processes),
    )
    urls = {row["app"]: row["url"] for row in processes if row.get("url")}
    for name, url in urls.items():
        client.echo(f"{name}: {url}")


@click.command("ps:scale")
@APP
@click.argument("changes", nargs=-1, metavar="[TYPE=N|TYPE+N|TYPE-N]...")
@pass_client
def ps_scale(client: Client, app: str, changes: tuple[str, ...]) -> None:
    """Change how many processes of each type run (web=2, web+1); with no change, show it."""
    formation = client.call("ps:scale", app=app, changes=list(changes))
    client.echo(f"{app}: " + " ".join(f"{t}={n}" for t, n in formation.items()))


@click.command()
@APP
@click.argument(
    "target", required=False, metavar="[TYPE[.N]]", callback=checked(parse_process_name)
)
@pass_client
def restart(client: Client, app: str, target: str | None) -> None:
    """Restart an app's processes: all, one type's, or one."""
    result = client.call("restart", app=app, target=target)
    names = result["restarted"] if isinstance(result, dict) else result
    client.echo(f"restarted {app}: {', '.join(names) or 'nothing was running'}")
    client.on_warnings(result.get("stuck", []) if isinstance(result, dict) else [])


@click.command()
@APP
@pass_client
def stop(client: Client, app: str) -> None:
    """Stop every process of an app (it stays stopped across daemon restarts)."""
    result = client.call("stop", app=app)
    client.echo(f"stopped {app}")
    client.on_warnings(result.get("stuck", []) if isinstance(result, dict) else [])


@click.command()
@APP
@pass_client
def start(client: Client, app: str) -> None:
    """Start an app's processes at its formation."""
    client.call("start", app=app)
    client.echo(f"started {app}")


class LogPrinter:
    """Writes log text, each app[process] in its own colour on a terminal. What processes
    wrote reaches a terminal (or an ssh client) only made safe (terminal.py); into a pipe
    here it goes as it is, for the tools downstream."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __call__(self, text: str) -> None:
        if not self.client.tty:
            self.client.write(text)
            return
        from rich.text import Text  # noqa: PLC0415

        # Escaped first, so that lines split at newlines only: a "\r" or "\u2028" in a
        # line stays in it, visible.
        for line in printable(text).splitlines():
            stamp, _, rest = line.partition(" ")
            source, sep, message = rest.partition(": ")
            colour = _COLOURS[zlib.crc32(source.encode()) % len(_COLOURS)]
            if source.endswith(("[dokuen]", "[router]")):
                colour = "dim"
            styled = Text.assemble((stamp + " ", "dim"), (source + sep, colour), message)
            self.client.console.print(styled, soft_wrap=True)


@click.command()
@click.argument("app", required=False, callback=app_name)
@click.option("-n", "--num", "lines", default=100, show_default=True, type=click.IntRange(0))
@click.option(
    "-f", "--follow", "-t", "--tail", "follow", is_flag=True, help="Keep printing new lines."
)
@click.option(
    "--ps",
    "process",
    metavar="TYPE[.N]",
    callback=checked(parse_process_name),
    help="Only this process type or process.",
)
@click.option(
    "--source",
    type=click.Choice(SOURCES),
    help="Only the processes' own lines (app), the platform's (dokuen) or the requests (router).",
)
@pass_client
def logs(
    client: Client,
    app: str | None,
    lines: int,
    follow: bool,
    process: str | None,
    source: str | None,
) -> None:
    """The last lines of the unified log, then (with -f) new ones as they come."""
    wanted = {"ps": process, **({"source": source} if source else {})}
    try:
        client.call("logs", LogPrinter(client), app=app, lines=lines, follow=follow, **wanted)
    except KeyboardInterrupt:
        sys.exit(0)


@click.command("open")
@APP
@pass_client
def open_app(client: Client, app: str) -> None:
    """Print the app's URL, and open it in a browser on a desktop."""
    # apps:info, not apps: a key limited to APP may ask for it (ssh/scope.py).
    url = client.call("apps:info", app=app, disk=False)["url"]
    if url is None:
        raise NotFound(
            f"{app} has no URL: it runs no web process (add a 'web:' line to its Procfile)"
        )
    client.echo(url)
    if client.tty and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        click.launch(url)


COMMANDS = (
    apps,
    apps_info,
    apps_create,
    apps_rename,
    apps_destroy,
    deploy,
    run,
    run_detached,
    ps,
    ps_scale,
    ps_stop,
    restart,
    alias(restart, "ps:restart"),
    stop,
    start,
    open_app,
    logs,
)
