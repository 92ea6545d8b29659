"""``dokuenctl status``: the daemon at a glance, with its nginx, PostgreSQL, service manager
and backups."""

import time
from typing import Any

import click

from dokuen.cli.arguments import JSON, print_json
from dokuen.cli.console import Client, duration, pass_client
from dokuen.errors import DokuenError


@click.command()
@JSON
@pass_client
def status(client: Client, as_json: bool) -> None:
    """Daemon version, uptime, apps and process counts."""
    info = client.call("status")
    if as_json:
        print_json(info)
        return
    client.echo(f"dokuend {info['version']} (pid {info['pid']}), up {duration(info['uptime'])}")
    client.echo(f"home       {info['home']}")
    client.echo(f"service    {_service_line(info.get('service'))}")
    client.echo(f"apps       {info['apps']}")
    client.echo(
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
        client.echo(f"nginx      {where}" + (f", pid {nginx['pid']}" if nginx["pid"] else ""))
    else:
        client.echo("nginx      off (apps answer on their own ports)")
    if nginx["problem"]:
        client.echo(f"warning: {nginx['problem']}", err=True)
    if nginx.get("router"):
        counts = nginx["router"]
        client.echo(
            f"router     {counts['lines']} lines, {counts['unparsed']} unparsed, "
            f"{counts['unsent']} write failures reported by nginx (a full disk)"
        )
        if counts.get("problem"):
            client.echo(f"warning: {counts['problem']}", err=True)
    postgres = info.get("postgres") or {"mode": "off", "problem": None}
    client.echo(f"postgres   {_postgres_line(postgres)}")
    if postgres["problem"]:
        client.echo(f"warning: {postgres['problem']}", err=True)
    client.echo(f"cgroups    {_cgroups_line(info.get('cgroups'))}")
    _https_lines(client, info.get("https"))
    offline = set(info.get("maintenance", ()))
    for app, url in sorted(info["urls"].items()):
        note = " (maintenance mode: 503)" if app in offline else ""
        client.echo(f"{app:<10} {url or '(no web process running)'}{note}")
    for app, problem in sorted(info.get("broken", {}).items()):
        client.echo(f"broken     {app}: {problem}")
    _backups_lines(client, info.get("backups"))


def _backups_lines(client: Client, backups: dict[str, Any] | None) -> None:
    """``backups  file:///srv/backups, 2 apps on a schedule`` and a line per failure."""
    if not backups:
        return
    scheduled = len(backups["scheduled"])
    where = backups["target"] or "no target (set DOKUEN_BACKUP_URL)"
    on = "1 app" if scheduled == 1 else f"{scheduled} apps"
    client.echo(f"backups    {where}, {on} on a schedule")
    for failure in backups["failing"]:
        client.echo(f"backups    FAILING: {failure}")


def _https_lines(client: Client, https: dict[str, Any] | None) -> None:
    """``https      port 443, 2 certificates, ACME https://...`` and a line per failure."""
    if not https:
        return
    count = https["certificates"]
    auto = "every app" if https["default_auto"] else "apps with certs:auto"
    client.echo(
        f"https      port {https['port']}, {count} certificate{'' if count == 1 else 's'}, "
        f"ACME for {auto} from {https['acme']}"
    )
    for app, error in https["failing"].items():
        client.echo(f"warning: https: {app}: certificate not obtained: {error}", err=True)
    for app, expires in https.get("expiring", {}).items():
        client.echo(f"warning: https: {app}: certificate expires {expires[:16]}Z", err=True)


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


def _cgroups_line(cgroups: dict[str, Any] | None) -> str:
    """``v1 (freezer, memory, pids) in /sys/fs/cgroup/memory/dokuen-1a2b3c4d5e, ...`` or
    ``off (why); a stop reaches a process's session and what the subreaper adopts``."""
    if not cgroups or cgroups["mode"] == "off":
        why = f" ({cgroups['problem']})" if cgroups and cgroups["problem"] else ""
        return f"off{why}; a stop reaches a process's group and what the subreaper adopts"
    line = f"{cgroups['mode']} ({', '.join(cgroups['controllers']) or 'kills only'})"
    line += f" in {', '.join(cgroups['groups'])}"
    return line + (f"; {cgroups['problem']}" if cgroups["problem"] else "")


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


@click.command("daemon:reload")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for it.")
@pass_client
def daemon_reload(client: Client, timeout: float) -> None:
    """Re-execute dokuend in place (after an upgrade): every app keeps running and serving,
    no log line is lost. Waits until the new dokuend answers with its apps restored."""
    began = time.monotonic()
    old = client.call("daemon:reload")
    deadline = began + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            info = client.call("status")
        except DokuenError:  # between the two images the socket is briefly gone
            continue
        if info.get("started") == old["started"]:
            tried = info.get("reexec") or {}
            if tried.get("attempts") == old.get("attempt") and tried.get("error"):
                raise DokuenError(tried["error"])  # the same image goes on: no new one comes
            continue
        took = time.monotonic() - began
        client.echo(f"dokuend {info['version']} re-executed (pid {info['pid']}) in {took:.1f}s")
        return
    raise DokuenError(
        f"dokuend did not answer within {timeout:g}s of its re-exec (see its log: "
        "journalctl -u dokuend)"
    )


COMMANDS = (status, daemon_reload)
