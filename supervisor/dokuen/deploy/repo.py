"""Each app's bare git repository, ``$DOKUEN_HOME/apps/APP/repo.git``: making it, its
hooks, and the git commands the hooks need (receive.py is what a push does; after it has
landed, the post-receive hook asks dokuend for a bundle of the repository, bundle.py).

Blocking subprocess and file I/O: the daemon calls these off its event loop. git always gets
an argv list, never a shell, and nothing a user pushed (refs, commit text) is ever written
into the hook: the hook is the same script for every app.
"""

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from dokuen.errors import DokuenError, InvalidName, SettingsError
from dokuen.names import check_app_name

if TYPE_CHECKING:  # the hook imports this module: it starts without their imports
    from dokuen.entrypoint import Entrypoint

REPO_DIR = "repo.git"
DEFAULT_BRANCH = "main"
OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 repositories

HOOK = """\
#!/bin/sh
# Written by dokuend, and written again whenever it starts: a push to the app's deploy
# branch builds and deploys it, and a failed deploy rejects the push.
exec {command}
"""
POST_HOOK = """\
#!/bin/sh
# Written by dokuend, and written again whenever it starts: once a push has landed, a
# bundle of the repository goes to the backup target (DOKUEN_BACKUP_URL), if there is one.
exec {command}
"""


def render_hook(entrypoint: "Entrypoint") -> str:
    """The pre-receive hook: the same static script for every app (the app is known from
    the repository's path). Raises SettingsError for paths that are not plain."""
    light = entrypoint.module_command("dokuen.cli.githook")  # no click: faster to start
    return HOOK.format(command=light or entrypoint.command("git-hook"))


MANAGED_HOOKS = ("pre-receive", "post-receive")


def render_hooks(entrypoint: "Entrypoint", backups: bool = True) -> dict[str, str]:
    """Every hook of an app's repository by name, each as static as ``render_hook``'s. The
    post-receive hook only with a backup target (``backups``): without one it would start
    a dokuenctl after every push, for nothing, while the pusher waits."""
    hooks = {"pre-receive": render_hook(entrypoint)}
    if backups:
        hooks["post-receive"] = POST_HOOK.format(command=entrypoint.command("git-post-receive"))
    return hooks


# A deploy is the commit's tree byte for byte, whatever the pushed .gitattributes asks of
# the checkout (info/attributes wins over it): no filter driver of the checking-out
# account's git config runs (git-lfs's would fetch from the URL the tree names, as root),
# no end-of-line, $Id$ or encoding rewrite; and `git archive` leaves nothing out.
EXPORT_AS_COMMITTED = (
    "* -filter -text -eol -ident -working-tree-encoding -export-ignore -export-subst\n"
)


def ensure_repo(path: Path, hooks: Mapping[str, str]) -> bool:
    """Make ``path`` a bare repository (default branch main) unless it is one, and make its
    ``hooks`` (name -> script), and remove the hooks dokuend writes that ``hooks`` leaves
    out. Returns True when the repository was created.

    Raises:
        SettingsError: git is missing, or ``path`` is something else.
    """
    from dokuen.store import write_atomic  # noqa: PLC0415 (see TYPE_CHECKING above)

    created = False
    if not (path / "HEAD").is_file():
        if path.exists():
            raise SettingsError(f"{path} exists but is not a git repository (move it away)")
        staging = path.with_name(f".{path.name}.new")
        shutil.rmtree(staging, ignore_errors=True)
        _init_bare(staging)
        staging.chmod(0o700)  # pushes and history are the app's: for its owner alone
        staging.rename(path)
        created = True
    # dokuend's own file: written again when an older dokuend wrote less (EXPORT_AS_COMMITTED).
    (path / "info").mkdir(exist_ok=True)
    attributes = path / "info" / "attributes"
    if not attributes.is_file() or attributes.read_text(errors="replace") != EXPORT_AS_COMMITTED:
        write_atomic(attributes, EXPORT_AS_COMMITTED)
    (path / "hooks").mkdir(exist_ok=True)
    for name in MANAGED_HOOKS:
        if name not in hooks:
            (path / "hooks" / name).unlink(missing_ok=True)
    for name, script in hooks.items():
        hook = path / "hooks" / name
        try:
            written = hook.read_text(encoding="utf-8")
        except FileNotFoundError:
            written = None
        if written != script or not os.access(hook, os.X_OK):
            write_atomic(hook, script, mode=0o755)
    return created


def _init_bare(path: Path) -> None:
    # No templates: no sample hooks, nothing but what a bare repository needs. git's own
    # variables in our environment (a daemon started from a hook) must not steer it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    argv = ["git", "init", "--bare", "--quiet", "--template=", f"--initial-branch={DEFAULT_BRANCH}"]
    try:
        done = subprocess.run(
            [*argv, str(path)], env=env, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise SettingsError("git is not installed (apt install git)") from None
    if done.returncode != 0:
        raise SettingsError(f"git init {path} failed: {done.stderr.strip()}")


def app_of_repo(path: Path) -> str:
    """The app whose repository ``path`` is (``.../apps/APP/repo.git``).

    Raises:
        InvalidName: ``path`` is not an app's repository, or APP is not a valid app name.
    """
    if path.name != REPO_DIR or path.parent.parent.name != "apps":
        raise InvalidName(f"{path} is not an app's repository (expected .../apps/APP/repo.git)")
    return check_app_name(path.parent.name)


def check_object_id(text: str) -> str:
    """Return ``text`` if it is a full commit id (so it can never be read as an option)."""
    if not OBJECT_ID.fullmatch(text):
        raise InvalidName(f"not a full commit id: {text!r}")
    return text


# What the hook runs. It inherits the hook's environment on purpose: during pre-receive the
# pushed objects are still in git's quarantine directory, which only GIT_OBJECT_DIRECTORY
# and GIT_ALTERNATE_OBJECT_DIRECTORIES (set by git for the hook) make visible.


def ref_value(repo: Path, ref: str) -> str | None:
    """The commit ``ref`` points at now, or None when it does not exist."""
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", ref],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def export_commit(repo: Path, commit: str, destination: Path) -> None:
    """Write the tree of ``commit`` into the empty directory ``destination``.

    git checks the tree out itself, in one process (``read-tree --reset -u`` with a scratch
    index, ``destination.index``, and ``destination`` as its work tree): git trees hold no
    absolute paths, no ``..``, no devices, and git never writes through a link. What git
    would allow and a deploy must not, a link that points out of the tree, is refused
    after the fact. Unlike tarfile's extraction filters (Python 3.11.4+), this
    needs nothing of the Python it runs on.

    Raises:
        DokuenError: git could not read the commit, or the tree holds a link out of it
        (named).
    """
    short = check_object_id(commit)[:7]
    # The hook's own environment (see above), and an index of our own beside the tree.
    index = destination.with_name(f"{destination.name}.index")
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    argv = ["git", f"--work-tree={destination}", "read-tree", "--reset", "-u", commit]
    try:
        done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, check=False)
    finally:
        index.unlink(missing_ok=True)
    if done.returncode != 0:
        errors = done.stderr.decode(errors="replace").strip()
        raise DokuenError(f"cannot check out commit {short}: {errors}")
    for link in _links_out_of(destination):
        raise DokuenError(
            f"commit {short} cannot be deployed: {link.relative_to(destination)} is a link "
            f"out of the app's tree (to {os.readlink(link)!r}); commit what it points to instead"
        )


def _links_out_of(top: Path) -> list[Path]:
    """The symbolic links under ``top`` whose target lies outside it, read as text and as
    the kernel resolves it. The text alone is not enough: with ``here -> .``, the link
    ``here/here/../../etc/shadow`` folds back into the tree on paper, but the kernel
    follows each ``here`` before each ``..`` and climbs to /etc/shadow. ``top`` is a fresh
    directory only this process writes, so nothing changes the links while they are
    resolved."""
    found = []
    root = os.path.realpath(top)
    for directory, dirs, files in os.walk(top):  # os.walk does not descend into links
        for name in [*dirs, *files]:
            path = Path(directory, name)
            if path.is_symlink():
                target = os.path.join(directory, os.readlink(path))
                resolved = os.path.normpath(os.path.join(root, os.path.relpath(target, top)))
                followed = os.path.realpath(path)  # every link on the way, as the kernel would
                if (
                    os.path.isabs(os.readlink(path))
                    or os.path.commonpath([root, resolved]) != root
                    or os.path.commonpath([root, followed]) != root
                ):
                    found.append(path)
    return found
