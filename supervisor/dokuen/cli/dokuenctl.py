"""``dokuenctl``: drive dokuend over its control socket."""

import contextlib
import functools
import os
import shlex
import signal
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import click

from dokuen import __version__, client
from dokuen.cli.arguments import APP, JSON, app_name, checked, print_json
from dokuen.cli.databases import COMMANDS as DATABASE_COMMANDS
from dokuen.cli.service import service_install, service_uninstall
from dokuen.errors import DokuenError
from dokuen.names import check_config_key, check_domain, check_ssh_key_name, parse_process_name
from dokuen.service.account import client_socket
from dokuen.ssh.command import Ctl, parse_ssh_command

if TYPE_CHECKING:
    from rich.console import Console

_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta")


class Client:
    """What every command shares: the socket, and how to print."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.tty = sys.stdout.isatty()
        self.warn = True  # print the daemon's warnings (a failed backup) on stderr

    @functools.cached_property
    def console(self) -> "Console":
        # rich only on a terminal, where its tables and colours show: imported on first
        # use, it costs nothing to scripts and pipes.
        from rich.console import Console  # noqa: PLC0415

        return Console(highlight=False)

    def call(
        self, command: str, on_output: Callable[[str], None] | None = None, **args: Any
    ) -> Any:
        on_warnings = None if self.warn else _ignore
        return client.request(self.socket_path, command, args, on_output or write_out, on_warnings)

    def table(self, headers: Sequence[str], rows: list[list[str]]) -> None:
        if self.tty:
            from rich.table import Table  # noqa: PLC0415

            table = Table(*headers, box=None, header_style="bold", pad_edge=False)
            for row in rows:
                table.add_row(*row)
            self.console.print(table)
            return
        widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
        for row in [list(headers), *rows]:
            click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _ignore(_warnings: list[str]) -> None:
    pass


def write_out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def duration(seconds: float | None) -> str:
    """``42s``, ``3m07s``, ``5h02m``, ``2d04h``."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


class Group(click.Group):
    """Maps DokuenError to ``error: ...`` and exit 1, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DokuenError as exc:
            fail(str(exc))
        except BrokenPipeError:
            sys.stderr.close()  # `dokuenctl logs | head` is not an error
            sys.exit(0)


pass_client = click.make_pass_decorator(Client)


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
    ctx.obj = Client(socket.absolute() if socket else client_socket(os.environ, home))


@main.command()
@JSON
@pass_client
def status(client: Client, as_json: bool) -> None:
    """Daemon version, uptime, apps and process counts."""
    info = client.call("status")
    if as_json:
        print_json(info)
        return
    click.echo(f"dokuend {info['version']} (pid {info['pid']}), up {duration(info['uptime'])}")
    click.echo(f"home       {info['home']}")
    click.echo(f"service    {_service_line(info.get('service'))}")
    click.echo(f"apps       {info['apps']}")
    click.echo(
        f"processes  {info['running']} running, {info['crashed']} crashed, "
        f"{info['processes']} in all"
    )
    nginx = info["nginx"]
    if nginx["mode"] in ("managed", "system"):
        where = f"{nginx['mode']}, listening on {nginx['listen']}"
        click.echo(f"nginx      {where}" + (f", pid {nginx['pid']}" if nginx["pid"] else ""))
    else:
        click.echo("nginx      off (apps answer on their own ports)")
    if nginx["problem"]:
        click.echo(f"warning: {nginx['problem']}", err=True)
    postgres = info.get("postgres") or {"mode": "off", "problem": None}
    click.echo(f"postgres   {_postgres_line(postgres)}")
    if postgres["problem"]:
        click.echo(f"warning: {postgres['problem']}", err=True)
    for app, url in sorted(info["urls"].items()):
        click.echo(f"{app:<10} {url or '(no web process running)'}")
    _backups_lines(info.get("backups"))


def _backups_lines(backups: dict[str, Any] | None) -> None:
    """``backups  file:///srv/backups, 2 apps on a schedule`` and a line per failure."""
    if not backups:
        return
    scheduled = len(backups["scheduled"])
    where = backups["target"] or "no target (set DOKUEN_BACKUP_URL)"
    on = "1 app" if scheduled == 1 else f"{scheduled} apps"
    click.echo(f"backups    {where}, {on} on a schedule")
    for failure in backups["failing"]:
        click.echo(f"backups    FAILING: {failure}")


def _postgres_line(postgres: dict[str, Any]) -> str:
    """``managed, running on 127.0.0.1:5433, pid 42 (PostgreSQL 15.18)``."""
    if postgres["mode"] == "external":
        return f"external, {postgres['server']}"
    if postgres["mode"] != "managed":
        return "off" + (f" ({postgres['reason']})" if postgres.get("reason") else "")
    if "state" not in postgres:  # managed, but not installed
        return "managed, not installed"
    line = f"managed, {postgres['state']}, {postgres['listen']}"
    if postgres["pid"]:
        line += f", pid {postgres['pid']}"
    return line + (f" (PostgreSQL {postgres['version']})" if postgres["version"] else "")


def _service_line(service: dict[str, Any] | None) -> str:
    """``systemd (sd_notify, watchdog pings every 15s)``, or ``none (started by hand)``."""
    if not service or service["manager"] == "none":
        return "none (started by hand)"
    notes = []
    if service["notify"]:
        notes.append("sd_notify")
    if service["watchdog"]:
        notes.append(f"watchdog pings every {service['watchdog']:g}s")
    return str(service["manager"]) + (f" ({', '.join(notes)})" if notes else "")


@main.command()
@JSON
@pass_client
def apps(client: Client, as_json: bool) -> None:
    """List apps."""
    listing = client.call("apps")
    if as_json:
        print_json(listing)
        return
    if not listing:
        click.echo("no apps yet (create one: dokuenctl apps:create NAME)")
        return
    rows = []
    for app in listing:
        state = "stopped" if app["stopped"] else f"{app['running']}/{app['processes']} running"
        if app["crashed"]:
            state += f", {app['crashed']} crashed"
        formation = " ".join(f"{t}={n}" for t, n in app["formation"].items()) or "-"
        rows.append([app["name"], app["release"] or "-", formation, state, app["url"] or "-"])
    client.table(["APP", "RELEASE", "FORMATION", "STATE", "URL"], rows)


@main.command("apps:create")
@APP
@pass_client
def apps_create(client: Client, app: str) -> None:
    """Create an app."""
    created = client.call("apps:create", app=app)
    click.echo(f"created {app}; deploy it with: git push {created['repo']} main")
    click.echo(f"  (or from a directory: dokuenctl deploy {app} DIR)")


@main.command("apps:destroy")
@APP
@click.option("--confirm", metavar="APP", help="The app's name again, to confirm.")
@pass_client
def apps_destroy(client: Client, app: str, confirm: str | None) -> None:
    """Stop an app and delete all its state."""
    client.call("apps:destroy", app=app, confirm=confirm)
    click.echo(f"destroyed {app}")


@main.command()
@APP
@click.argument("directory", type=click.Path(path_type=Path))
@pass_client
def deploy(client: Client, app: str, directory: Path) -> None:
    """Make a new release of APP from DIRECTORY and start it."""
    result = client.call("deploy", app=app, dir=str(directory.absolute()))
    click.echo(f"{app} {result['release']} is running")


@main.command(context_settings={"ignore_unknown_options": True})
@APP
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_client
def run(client: Client, app: str, command: tuple[str, ...]) -> None:
    """Run COMMAND once in the app's current release and environment; exit with its code."""
    line = command[0] if len(command) == 1 else shlex.join(command)
    try:
        result = client.call("run", app=app, line=line)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(result["status"])


@main.command()
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
            r["created"] or "-",
            (r["commit"] or "-")[:8],
            ", ".join(r["buildpacks"]) or "-",
            " ".join(r["process_types"]),
            "current" if r["current"] else "",
        ]
        for r in listing
    ]
    client.table(["RELEASE", "CREATED", "COMMIT", "BUILDPACKS", "TYPES", ""], rows)


@main.command("releases:output")
@APP
@click.argument("release", required=False, metavar="[vN]")
@pass_client
def releases_output(client: Client, app: str, release: str | None) -> None:
    """The build output of a release (default: the current one)."""
    click.echo(client.call("releases:output", app=app, release=release), nl=False)


@main.command()
@APP
@click.argument("release", required=False, metavar="[vN]")
@pass_client
def rollback(client: Client, app: str, release: str | None) -> None:
    """Run an earlier release again (default: the one before the current), no build."""
    result = client.call("rollback", app=app, release=release)
    click.echo(f"{app} {result['release']} is running")


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
            p["command"],
        ]
        for p in processes
    ]


@main.command()
@click.argument("app", required=False, callback=app_name)
@JSON
@pass_client
def ps(client: Client, app: str | None, as_json: bool) -> None:
    """One row per process: app, name, pid, port, state, restarts, uptime."""
    processes = client.call("ps", app=app)
    if as_json:
        print_json(processes)
        return
    if not processes:
        click.echo("no processes running")
        return
    client.table(
        ["APP", "NAME", "PID", "PORT", "STATE", "RESTARTS", "UPTIME", "COMMAND"],
        _process_rows(processes),
    )
    urls = {row["app"]: row["url"] for row in processes if row.get("url")}
    for name, url in urls.items():
        click.echo(f"{name}: {url}")


@main.command("ps:scale")
@APP
@click.argument("changes", nargs=-1, required=True, metavar="TYPE=N...")
@pass_client
def ps_scale(client: Client, app: str, changes: tuple[str, ...]) -> None:
    """Change how many processes of each type run."""
    formation = client.call("ps:scale", app=app, changes=list(changes))
    click.echo(f"{app}: " + " ".join(f"{t}={n}" for t, n in formation.items()))


@main.command()
@APP
@click.argument(
    "target", required=False, metavar="[TYPE[.N]]", callback=checked(parse_process_name)
)
@pass_client
def restart(client: Client, app: str, target: str | None) -> None:
    """Restart an app's processes: all, one type's, or one."""
    names = client.call("restart", app=app, target=target)
    click.echo(f"restarted {app}: {', '.join(names) or 'nothing was running'}")


@main.command()
@APP
@pass_client
def stop(client: Client, app: str) -> None:
    """Stop every process of an app (it stays stopped across daemon restarts)."""
    client.call("stop", app=app)
    click.echo(f"stopped {app}")


@main.command()
@APP
@pass_client
def start(client: Client, app: str) -> None:
    """Start an app's processes at its formation."""
    client.call("start", app=app)
    click.echo(f"started {app}")


class LogPrinter:
    """Writes log text, each app[process] in its own colour on a terminal."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __call__(self, text: str) -> None:
        if not self.client.tty:
            write_out(text)
            return
        from rich.text import Text  # noqa: PLC0415

        for line in text.splitlines():
            stamp, _, rest = line.partition(" ")
            source, sep, message = rest.partition(": ")
            colour = _COLOURS[zlib.crc32(source.encode()) % len(_COLOURS)]
            if source.endswith("[dokuen]"):
                colour = "dim"
            styled = Text.assemble((stamp + " ", "dim"), (source + sep, colour), message)
            self.client.console.print(styled, soft_wrap=True)


@main.command()
@click.argument("app", required=False, callback=app_name)
@click.option("-n", "--num", "lines", default=100, show_default=True, type=click.IntRange(0))
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option(
    "--ps",
    "process",
    metavar="TYPE[.N]",
    callback=checked(parse_process_name),
    help="Only this process type or process.",
)
@pass_client
def logs(client: Client, app: str | None, lines: int, follow: bool, process: str | None) -> None:
    """The last lines of the unified log, then (with -f) new ones as they come."""
    try:
        client.call("logs", LogPrinter(client), app=app, lines=lines, follow=follow, ps=process)
    except KeyboardInterrupt:
        sys.exit(0)


@main.command()
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
        click.echo(f"{key}={value}")


@main.command("config:get")
@APP
@click.argument("key", callback=checked(check_config_key))
@pass_client
def config_get(client: Client, app: str, key: str) -> None:
    """Print one config var's value."""
    click.echo(client.call("config:get", app=app, key=key))


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="KEY=VALUE")
    try:
        return check_config_key(key), value
    except DokuenError as exc:
        raise click.BadParameter(str(exc), param_hint="KEY=VALUE") from None


@main.command("config:set")
@APP
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@pass_client
def config_set(client: Client, app: str, pairs: tuple[str, ...]) -> None:
    """Set config vars and restart the app's processes."""
    values = dict(_pair(pair) for pair in pairs)
    client.call("config:set", app=app, values=values)
    click.echo(f"set {', '.join(values)} on {app}; its processes restarted")


@main.command("config:unset")
@APP
@click.argument(
    "keys", nargs=-1, required=True, metavar="KEY...", callback=checked(check_config_key)
)
@pass_client
def config_unset(client: Client, app: str, keys: tuple[str, ...]) -> None:
    """Remove config vars and restart the app's processes."""
    client.call("config:unset", app=app, keys=list(keys))
    click.echo(f"unset {', '.join(keys)} on {app}; its processes restarted")


@main.command()
@APP
@pass_client
def domains(client: Client, app: str) -> None:
    """The host names an app answers on: APP.DOKUEN_DOMAIN, then its own."""
    for host in client.call("domains", app=app):
        click.echo(host)


@main.command("domains:add")
@APP
@click.argument("domain", callback=checked(check_domain))
@pass_client
def domains_add(client: Client, app: str, domain: str) -> None:
    """Let an app answer on another host name too."""
    client.call("domains:add", app=app, domain=domain)
    click.echo(f"{app} now answers on {domain}")


@main.command("domains:remove")
@APP
@click.argument("domain", callback=checked(check_domain))
@pass_client
def domains_remove(client: Client, app: str, domain: str) -> None:
    """Stop an app answering on one of its host names."""
    client.call("domains:remove", app=app, domain=domain)
    click.echo(f"{app} no longer answers on {domain}")


@main.command("ssh-keys")
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


@main.command("ssh-keys:add")
@click.argument("name", callback=checked(check_ssh_key_name))
@click.argument("keyfile", type=click.File("rb"))
@pass_client
def ssh_keys_add(client: Client, name: str, keyfile: BinaryIO) -> None:
    """Let the public key in KEYFILE (- for stdin) git push and run dokuenctl over ssh."""
    from dokuen.ssh.keys import MAX_KEY_TEXT  # noqa: PLC0415 (hashlib and co. only here)

    text = keyfile.read(MAX_KEY_TEXT + 1).decode(errors="replace")
    added = client.call("ssh-keys:add", name=name, key=text)
    click.echo(f"added ssh key {name} ({added['type']} {added['fingerprint']})")


@main.command("ssh-keys:remove")
@click.argument("name", callback=checked(check_ssh_key_name))
@pass_client
def ssh_keys_remove(client: Client, name: str) -> None:
    """Take an ssh key's access away."""
    client.call("ssh-keys:remove", name=name)
    click.echo(f"removed ssh key {name}")


def _stop_on_signal(signum: int, _frame: object) -> None:
    # SIGTERM/SIGHUP (the pusher went away) become an exit, so `finally` blocks clean up.
    sys.exit(128 + signum)


@main.command("git-hook", hidden=True)
@pass_client
def git_hook(client: Client) -> None:
    """The pre-receive hook of every app's repository (git runs it in the repository)."""
    from dokuen.deploy.receive import receive  # noqa: PLC0415 (tarfile and co. only here)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)

    def request(command: str, args: dict[str, Any], on_output: Callable[[str], None]) -> Any:
        return client.call(command, on_output, **args)

    try:
        receive(Path.cwd(), sys.stdin.read(), request, write_out)
    except BrokenPipeError:
        # git went away mid-push. Not the usual exit 0 for a closed pipe: a hook that
        # exits 0 accepts the push.
        sys.exit(1)


@main.command("ssh-serve", hidden=True)
@click.argument("key", callback=checked(check_ssh_key_name))
@pass_client
def ssh_serve(client: Client, key: str) -> None:
    """The forced command of every authorized ssh key: run what SSH_ORIGINAL_COMMAND asks
    for when the key may (sshcommand.py), and refuse everything else."""
    asked = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    try:
        wanted = parse_ssh_command(asked)
    except DokuenError as exc:
        with contextlib.suppress(DokuenError):  # the refusal matters more than its log line
            client.call("ssh:audit", key=key, line=asked, allowed=False, reason=str(exc))
        raise
    client.call("ssh:audit", key=key, line=asked, allowed=True)
    if isinstance(wanted, Ctl):
        main.main(["--socket", str(client.socket_path), *wanted.args], prog_name="dokuenctl")
        return
    found = client.call("git:repo", app=wanted.app, create=True, key=key)
    if found["created"]:
        click.echo(f"-----> Created app {wanted.app} on its first push", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # The ssh session becomes git's: an argv list, no shell, the path from dokuend.
    os.execvp("git", ["git", "receive-pack", found["path"]])  # noqa: S606


@main.command("git-post-receive", hidden=True)
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
        click.echo(f"warning: the push landed, but its backup failed: {exc}", err=True)
        return
    for result in stored:
        click.echo(f"-----> Backed up the repository: {result['key']}")


def _cron(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from dokuen.backup.schedule import check_cron  # noqa: PLC0415 (croniter only here)

    try:
        return check_cron(value)
    except DokuenError as exc:
        raise click.BadParameter(str(exc)) from None


def _run_line(record: dict[str, Any] | None, what: str) -> str:
    if record is None:
        return f"{what:<12}never"
    if not record["ok"]:
        return f"{what:<12}{record['at']}: FAILED: {record['error']}"
    checked = ", verified by a restore" if record["verified"] else ""
    return f"{what:<12}{record['at']}: stored {record['id']}{checked}"


@main.command("backups:schedule")
@APP
@click.argument("cron", required=False, callback=_cron, metavar="[CRON]")
@click.option(
    "--keep",
    type=click.IntRange(1),
    metavar="N",
    help="Keep the N newest database dumps and repository bundles; delete older ones.",
)
@click.option(
    "--verify-every",
    type=click.IntRange(1),
    metavar="N",
    help="Restore-check every Nth scheduled backup (default: each one).",
)
@click.option("--off", is_flag=True, help="Stop backing APP up on a schedule.")
@JSON
@pass_client
def backups_schedule(
    client: Client,
    app: str,
    cron: str | None,
    keep: int | None,
    verify_every: int | None,
    off: bool,
    as_json: bool,
) -> None:
    """Back APP up on a cron schedule ("0 3 * * *": 03:00 every day, in this machine's time
    zone); without one, show its schedule and last backups."""
    if off and (cron or keep or verify_every):
        raise click.UsageError("--off takes no schedule")
    if cron is None and (keep or verify_every):
        raise click.UsageError(f'give the schedule too: backups:schedule {app} "0 3 * * *"')
    args: dict[str, Any] = {"app": app, "off": off}
    if cron is not None:
        args |= {"cron": cron, "keep": keep, "verify_every": verify_every or 1}
    info = client.call("backups:schedule", **args)
    if as_json:
        print_json(info)
        return
    schedule = info["schedule"]
    if schedule is None:
        click.echo(f"{app}: no backup schedule" + (" (removed)" if off else ""))
    else:
        keeping = f"keeping the {schedule['keep']} newest" if schedule["keep"] else "keeping all"
        every = schedule["verify_every"]
        checking = "verifying each one" if every == 1 else f"verifying every {every}th"
        click.echo(
            f'{app}: backups at "{schedule["cron"]}" ({schedule["zone"]}), {keeping}, {checking}'
        )
        click.echo(f"{'next run':<12}{schedule['next_run']}")
    click.echo(f"{'target':<12}{info['target'] or 'none: set DOKUEN_BACKUP_URL in dokuend.env'}")
    click.echo(_run_line(info["scheduled"], "last run"))
    click.echo(_run_line(info["bundle"], "last bundle"))


main.add_command(service_install)
main.add_command(service_uninstall)
for command in DATABASE_COMMANDS:
    main.add_command(command)
