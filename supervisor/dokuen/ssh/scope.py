"""What one ssh key may ask of dokuend: every request dokuenctl makes on behalf of an ssh
key (its forced command, ``dokuenctl ssh-serve NAME [--app APP]...``) passes
``check_request`` first.

- Every key: no request that makes dokuend read a path of the server for it (``deploy APP
  DIR``: over ssh, deploy by git push) and no ``pg:psql`` (psql would run on the server as
  the platform's account, and its ``\\!``, ``\\o |cmd``, ``\\copy ... program``, ``-f`` and
  ``-o`` run commands and read and write files as that account).
- An admin key (no ``--app``): every other request.
- A key scoped to apps: only the requests that name one of its apps (a push to it, its
  processes, logs, config, releases, domains, database and backups), and nothing that lists
  or changes every app or the platform (``apps``, ``status``, ``ps`` and ``logs`` without
  an app, ``ssh-keys*``, ``apps:destroy``, ``backups:capture --all``), nor the limits an
  admin holds its apps in (``config:set``/``config:unset`` of ``DOKUEN_MEMORY_LIMIT`` and
  ``DOKUEN_PROCESS_LIMIT``). Deny by default: a request not named here is refused.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dokuen.errors import Refused
from dokuen.names import LIMIT_VARS

# Requests a scoped key may make when their ``app`` (and ``source``) is one of its apps.
APP_REQUESTS = frozenset(
    {
        "apps:create",
        "apps:info",
        "ps",
        "ps:scale",
        "restart",
        "stop",
        "start",
        "logs",
        "config",
        "config:get",
        "config:set",
        "config:unset",
        "run",
        "run:detached",
        "ps:stop",
        "releases",
        "releases:info",
        "releases:output",
        "rollback",
        "domains",
        "domains:add",
        "domains:remove",
        "certs",
        "certs:remove",
        "certs:auto",
        "certs:renew",
        "certs:redirect",
        "certs:hsts",
        "certs:backup",
        "certs:restore",
        "git:repo",
        "pg:create",
        "pg:info",
        "pg:destroy",
        "backups",
        "backups:capture",
        "backups:capture-repo",
        "backups:restore",
        "backups:verify",
        "backups:download",
        "backups:schedule",
    }
)
# What ssh-serve itself sends for every key: the audit line of what the key asked for.
ANY_KEY = frozenset({"ssh:audit"})
# Refused over ssh whatever the key: these would have the server read a path, or run a
# program with a shell escape as the platform's account.
NOT_OVER_SSH = {
    "certs:add": (
        "certs:add is not available over ssh (it reads CERT and KEY on the server); copy "
        "them to the server and run it there, or let the ACME CA issue one: certs:auto APP"
    ),
    "deploy": (
        "deploy APP DIR is not available over ssh (it reads DIR on the server); "
        "deploy by git push: git push dokuen@HOST:APP main"
    ),
    "pg:connection": (
        "pg:psql is not available over ssh: psql's \\! and \\copy ... program would run "
        "commands on the server as the platform's account; run SQL as the app instead "
        '(dokuenctl run APP \'psql "$DATABASE_URL" -c "SELECT 1"\'), or pg:psql on the '
        "server itself"
    ),
}


@dataclass(frozen=True)
class KeyScope:
    """One ssh key, by name, and the apps it is limited to (none: an admin key)."""

    key: str
    apps: tuple[str, ...] = ()

    @property
    def admin(self) -> bool:
        return not self.apps

    def describe(self) -> str:
        """``ssh key 'ci' (apps: blog, shop)``: how refusals name the key."""
        return f"ssh key {self.key!r} (apps: {', '.join(self.apps)})"


def check_request(scope: KeyScope, command: str, args: Mapping[str, Any]) -> None:
    """Refuse what ``scope`` may not ask of dokuend.

    Raises:
        Refused: one line that names the key, its apps and what is allowed.
    """
    if command in NOT_OVER_SSH:
        raise Refused(NOT_OVER_SSH[command])
    if scope.admin or command in ANY_KEY:
        return
    named = args.get("app")
    if command not in APP_REQUESTS or args.get("all") is True:
        what = "--all" if args.get("all") is True else f"dokuenctl {command}"
        raise Refused(
            f"{scope.describe()} may only use commands that name one of its apps; "
            f"{what} is for admin keys"
        )
    if not isinstance(named, str):
        raise Refused(
            f"{scope.describe()} may only use commands that name one of its apps "
            f"(dokuenctl {command} {scope.apps[0]})"
        )
    for app in (named, args.get("source")):
        if app is not None and app not in scope.apps:
            doing = "push to" if command == "git:repo" else "use"
            raise Refused(f"{scope.describe()} may not {doing} app {app!r}")
    _check_limits(scope, command, args)


def _check_limits(scope: KeyScope, command: str, args: Mapping[str, Any]) -> None:
    """A scoped key may not change the limits its apps run under: they keep one app from
    taking the machine's memory or process table from the others."""
    values, keys = args.get("values"), args.get("keys")
    if command == "config:set" and isinstance(values, Mapping):
        changed = list(values)
    elif command == "config:unset" and isinstance(keys, list | tuple):
        changed = list(keys)
    else:
        return
    for key in changed:
        if key in LIMIT_VARS:
            raise Refused(
                f"{scope.describe()} may not change {key}: an app's limits are for admin "
                "keys (they keep one app from taking the machine from the others)"
            )
