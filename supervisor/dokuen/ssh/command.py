"""What an authorized ssh key may run. sshd runs every such key's forced command,
``dokuenctl ssh-serve NAME [--app APP]...``, with the command the client asked for in
SSH_ORIGINAL_COMMAND; this module decides which of two things it is, or refuses it:

- ``git-receive-pack 'APP'`` (what ``git push dokuen@HOST:APP`` sends; also ``APP.git``
  and ``/APP``, from ``ssh://dokuen@HOST/APP``): a push to a valid app's repository;
- ``dokuenctl ARGS...``, or the bare ``COMMAND ARGS...`` (``ssh dokuen@HOST apps``, as
  dokku and piku take them): one dokuenctl command.

Everything else (a shell, a fetch, any other program, dokuenctl's own options such as
``--socket`` and ``--home``) is refused. What the key may then ask of dokuend is scope.py's.
"""

import shlex
from collections.abc import Collection
from dataclasses import dataclass

from dokuen.errors import Refused
from dokuen.names import check_app_name

# Commands of dokuenctl an ssh key may not run: the hidden ones, that only git and sshd run.
HIDDEN = frozenset({"git-hook", "git-post-receive", "ssh-serve"})
ALLOWED = (
    "it may push (git push dokuen@HOST:APP main) and run dokuenctl commands "
    "(ssh dokuen@HOST dokuenctl apps)"
)


@dataclass(frozen=True)
class ReceivePack:
    """A push to the app's repository."""

    app: str


@dataclass(frozen=True)
class Ctl:
    """One dokuenctl command, its arguments as the client gave them."""

    args: tuple[str, ...]


def parse_ssh_command(text: str, commands: Collection[str] = ()) -> ReceivePack | Ctl:
    """Decide what SSH_ORIGINAL_COMMAND asks for; ``commands`` are dokuenctl's, which may
    also come bare.

    Raises:
        Refused: anything but a push to a valid app name or a dokuenctl command.
        InvalidName: a push to a repository path that is not an app name.
    """
    if not text.strip():
        raise Refused(f"this ssh key cannot open a shell; {ALLOWED}")
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise Refused(f"cannot read the command {text!r} ({exc}); {ALLOWED}") from None
    program, rest = argv[0], argv[1:]
    if program == "git" and rest[:1] == ["receive-pack"]:
        program, rest = "git-receive-pack", rest[1:]
    if program == "git-receive-pack":
        if len(rest) != 1:
            raise Refused("git-receive-pack takes exactly one repository (the app's name)")
        return ReceivePack(app_of_path(rest[0]))
    if program in commands:  # the bare form: `ssh dokuen@HOST logs blog -t`
        program, rest = "dokuenctl", argv
    if program == "dokuenctl":
        if rest and rest[0].startswith("-") and rest[0] not in ("-h", "--help", "--version"):
            raise Refused(f"dokuenctl options before the command ({rest[0]}) are not for ssh keys")
        if rest and rest[0] in HIDDEN:
            raise Refused(f"dokuenctl {rest[0]} is run by git and sshd, not by ssh keys")
        return Ctl(tuple(rest))
    if program in ("git-upload-pack", "git-upload-archive"):
        raise Refused(f"this ssh key cannot fetch or clone ({program}); {ALLOWED}")
    raise Refused(f"this ssh key cannot run {text!r}; {ALLOWED}")


def app_of_path(path: str) -> str:
    """The app a push names: ``blog``, ``blog.git``, ``/blog`` or ``/blog.git``.

    Raises:
        InvalidName: the rest is not an app name (a DNS label).
    """
    name = path.removeprefix("/").removesuffix(".git")
    return check_app_name(name)
