"""``dokuenctl status``: the daemon at a glance, with its nginx, PostgreSQL, service manager
and backups."""

from typing import Any

import click

from dokuen.cli.arguments import JSON, print_json
from dokuen.cli.console import Client, duration, pass_client


@click.command()
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
    isolation = info.get("isolation") or {"apps": "off", "reason": None, "uids": None}
    if isolation["apps"] == "uids":
        click.echo(f"isolation  each app runs as its own uid (uids {isolation['uids']})")
    else:
        click.echo(f"isolation  off ({isolation['reason'] or 'apps run as dokuend'})")
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
    """``managed, running, /var/lib/dokuen/postgres/run/.s.PGSQL.5433, pid 42 (PostgreSQL
    15.18)``."""
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


COMMANDS = (status,)
