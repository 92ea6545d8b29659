"""Installing and removing the service: the I/O shell around systemd.py and launchd.py.

It finds the installed dokuend, renders the shipped template, and carries out the steps the
pure halves list, saying each thing it did; a step that fails stops it with an error that
names the command and what the machine said.
"""

import os
import pwd
import shlex
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Mapping
from pathlib import Path

from dokuen.errors import ServiceError
from dokuen.resources import shipped
from dokuen.service import launchd, systemd
from dokuen.service.steps import Account, Command, Directory, File, OnFailure, Removal, Step
from dokuen.settings import home_and_socket

SYSTEMD = "systemd"
LAUNCHD = "launchd"
KINDS = (SYSTEMD, LAUNCHD)
Service = systemd.Unit | launchd.Job
Say = Callable[[str], None]
# root's tools, which a sudo or a plain user's PATH may lack
_SYSTEM_BIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def default_kind(platform: str = sys.platform) -> str:
    """launchd on macOS, systemd elsewhere."""
    return LAUNCHD if platform == "darwin" else SYSTEMD


def installed_dokuend() -> Path:
    """The dokuend of this install: next to the running dokuenctl, or in this Python's
    scripts directory. Raises ServiceError when there is none."""
    candidates = [Path(sys.argv[0]).absolute().parent, Path(sysconfig.get_path("scripts"))]
    for directory in candidates:
        path = directory / "dokuend"
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
    looked = ", ".join(str(directory) for directory in candidates)
    raise ServiceError(f"dokuend is not installed next to dokuenctl (looked in {looked})")


def describe(
    kind: str, per_user: bool, directory: Path | None, environ: Mapping[str, str]
) -> Service:
    """The service to install for this machine and user; ``directory`` overrides where its
    file goes (the default is the one its service manager reads)."""
    dokuend = installed_dokuend()
    home = Path.home()
    if kind == SYSTEMD:
        if per_user:
            config = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
            return systemd.Unit(
                dokuend,
                home_and_socket(environ)[0],
                directory or config / "systemd" / "user",
                per_user=True,
            )
        return systemd.Unit(dokuend, systemd.STATE_DIR, directory or systemd.SYSTEM_UNIT_DIR)
    if per_user:
        return launchd.Job(
            dokuend,
            home_and_socket(environ)[0],
            home / "Library" / "Logs" / "dokuend.log",
            directory or home / "Library" / "LaunchAgents",
            f"gui/{os.getuid()}",
        )
    return launchd.Job(
        dokuend,
        launchd.STATE_DIR,
        launchd.SYSTEM_LOG,
        directory or launchd.DAEMON_DIR,
        "system",
    )


def render_service(service: Service) -> str:
    """The unit or plist text, from the template shipped with Dokuen."""
    if isinstance(service, systemd.Unit):
        template = (shipped("systemd") / service.template).read_text()
        return systemd.render_unit(template, service)
    template = (shipped("launchd") / launchd.TEMPLATE).read_text()
    return launchd.render_plist(template, service)


def install(service: Service, environ: Mapping[str, str], say: Say) -> None:
    """Write, enable and start the service; say each step. Raises ServiceError."""
    _require_root(service, "install")
    text = render_service(service)
    per_user = _per_user(service)
    if isinstance(service, systemd.Unit):
        steps = systemd.install_steps(service, text)
        if not per_user:
            _warn_unreachable(service.dokuend, say)
    else:
        steps = launchd.install_steps(service, text)
    wanted = environ.get("DOKUEN_HOME")
    if wanted and Path(wanted).absolute() != service.home:
        say(f"note: DOKUEN_HOME={wanted} is not used: the service's state is in {service.home}")
    execute(steps, say, environ)
    say(_running_hint(service))


def uninstall(service: Service, purge: bool, environ: Mapping[str, str], say: Say) -> None:
    """Stop, disable and remove the service (and with ``purge`` its state); say each step."""
    _require_root(service, "remove")
    if isinstance(service, systemd.Unit):
        steps = systemd.uninstall_steps(service, purge)
    else:
        steps = launchd.uninstall_steps(service, purge)
    execute(steps, say, environ)
    if not purge:
        say(f"the state in {service.home} is kept (remove it too with --purge)")


def _per_user(service: Service) -> bool:
    if isinstance(service, systemd.Unit):
        return service.per_user
    return service.domain != "system"


def _require_root(service: Service, verb: str) -> None:
    if not _per_user(service) and os.geteuid() != 0:
        raise ServiceError(
            f"only root can {verb} the system service: run it with sudo, "
            "or use --user for a service of your own"
        )


def _warn_unreachable(path: Path, say: Say) -> None:
    """The system's unit runs dokuend as the dokuen user, who must be able to reach it: a
    virtualenv in a private home directory is a common way to get this wrong."""
    for each in [*reversed(path.parents), path]:
        try:
            mode = each.stat().st_mode
        except OSError:
            continue
        if not mode & 0o001:
            say(
                f"warning: {each} is not open to other users, so the dokuen user cannot run "
                f"{path}; install Dokuen where every user can read it (a virtualenv in "
                "/opt/dokuen, say)"
            )
            return


def _running_hint(service: Service) -> str:
    if isinstance(service, systemd.Unit):
        if service.per_user:
            return (
                "dokuend runs as your user: systemctl --user status dokuend; "
                "to keep it running after you log out and start it at boot: "
                "loginctl enable-linger"
            )
        return (
            "dokuend runs as the dokuen user: systemctl status dokuend, journalctl -u dokuend; "
            f"control it with sudo dokuenctl, or as a member of the dokuen group with "
            f"DOKUEN_HOME={service.home}"
        )
    where = "sudo launchctl print" if service.domain == "system" else "launchctl print"
    return f"dokuend is loaded: {where} {service.target}; its own log: {service.log}"


# -- carrying out the steps ----------------------------------------------------------------


def execute(steps: list[Step], say: Say, environ: Mapping[str, str]) -> None:
    """Carry out ``steps`` in order, saying what each did. Raises ServiceError at the first
    step that fails (with OnFailure.ERROR), or before the first one when a tool that a
    step needs is not installed (launchctl on Linux, say)."""
    for step in steps:
        if isinstance(step, Command | Account) and _tool(step.argv[0], environ) is None:
            tool = step.argv[0]
            raise ServiceError(f"{tool} is not installed: {_MISSING_TOOL.get(tool, 'install it')}")
    for step in steps:
        match step:
            case File(path, content, mode):
                _write(path, content, mode)
                say(f"wrote {path}")
            case Directory(path, mode):
                if not path.is_dir():
                    path.mkdir(mode=mode, parents=True)
                    say(f"made {path}")
            case Removal(path, tree):
                if tree and path.is_dir():
                    shutil.rmtree(path)
                    say(f"removed {path} and everything in it")
                elif not tree and (path.exists() or path.is_symlink()):
                    path.unlink()
                    say(f"removed {path}")
            case Account(name, argv, create):
                if _user_exists(name) != create:
                    _run(argv, OnFailure.ERROR, say, environ)
                    say(f"{'created' if create else 'deleted'} the system user {name}")
            case Command(argv, on_failure):
                if _run(argv, on_failure, say, environ):
                    say(f"ran {shlex.join(argv)}")


def _write(path: Path, content: str, mode: int) -> None:
    """Replace ``path`` whole: written beside it, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.new")
    staging.write_text(content)
    staging.chmod(mode)
    staging.replace(path)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


_MISSING_TOOL = {
    "systemctl": "this machine has no systemd (on macOS use --launchd; --print shows the unit)",
    "launchctl": "this machine has no launchd (on Linux use --systemd; --print shows the plist)",
    "useradd": "install the passwd package (useradd makes the dokuen user)",
    "userdel": "install the passwd package",
}
_NO_SYSTEMD = ("not been booted with systemd", "Failed to connect to bus", "Host is down")


def _tool(name: str, environ: Mapping[str, str]) -> str | None:
    return shutil.which(name, path=f"{environ.get('PATH', '')}:{_SYSTEM_BIN}")


def _run(argv: tuple[str, ...], on_failure: OnFailure, say: Say, env: Mapping[str, str]) -> bool:
    """Run one command; True when it succeeded. A failure raises ServiceError, is said as
    a warning, or is ignored, as ``on_failure`` asks."""
    tool = _tool(argv[0], env)
    if tool is None:
        problem = f"{argv[0]} is not installed: {_MISSING_TOOL.get(argv[0], 'install it')}"
    else:
        try:
            result = subprocess.run(
                [tool, *argv[1:]], capture_output=True, text=True, check=False, timeout=120
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = f"{shlex.join(argv)} failed: {exc}"
        else:
            if result.returncode == 0:
                return True
            said = " ".join((result.stderr or result.stdout).split()) or "no message"
            problem = f"{shlex.join(argv)} failed (exit {result.returncode}): {said}"
            if argv[0] == "systemctl" and any(sign in said for sign in _NO_SYSTEMD):
                problem += " (systemd is not running on this machine)"
    if on_failure is OnFailure.ERROR:
        raise ServiceError(problem)
    if on_failure is OnFailure.WARN:
        say(f"warning: {problem}")
    return False
