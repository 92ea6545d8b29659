"""What a push does. The pre-receive hook of an app's repository (``dokuenctl git-hook``)
reads the pushed ref updates, lets pushes to other branches through, and deploys the deploy
branch's new commit through dokuend; a failed deploy rejects the whole push.

Two pushes to one app take turns on a lock in the repository. A push whose deploy branch
moved while it waited (another push deployed first) is refused, as git itself would refuse
its ref update a moment later, but before it deploys anything.
"""

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from dokuen.deploy import repo
from dokuen.errors import Conflict, DokuenError, ProtocolError, Refused

ZERO_ID = re.compile(r"0{40}|0{64}")
LOCK_FILE = "dokuen-push.lock"
LANDING_FILE = "dokuen-landing.json"
LANDING_TIMEOUT = 30.0

# The control socket's request: (command, args, on_output) -> result (client.request's shape).
Request = Callable[[str, dict[str, Any], Callable[[str], None]], Any]
Write = Callable[[str], None]


# The hook starts once per push while the pusher waits: named tuples, not dataclasses
# (whose import, with inspect's, costs a start about 10 ms on a busy machine), and no
# tempfile (random, hashlib).


class RefUpdate(NamedTuple):
    """One line of a pre-receive hook's input: ``OLD NEW REF``."""

    old: str
    new: str
    ref: str

    @property
    def created(self) -> bool:
        return bool(ZERO_ID.fullmatch(self.old))

    @property
    def deleted(self) -> bool:
        return bool(ZERO_ID.fullmatch(self.new))


def parse_updates(text: str) -> list[RefUpdate]:
    """Parse the hook's stdin; raise ProtocolError for a line git would never write."""
    updates = []
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or not all(repo.OBJECT_ID.fullmatch(p) for p in parts[:2]):
            raise ProtocolError(f"pre-receive input is not 'OLD NEW REF': {line!r}")
        updates.append(RefUpdate(*parts))
    return updates


def deploy_ref(config: Mapping[str, str]) -> str:
    """The ref that deploys: ``refs/heads/main``, or the branch in the config var
    DEPLOY_BRANCH (``production`` or ``refs/heads/production``)."""
    branch = config.get("DEPLOY_BRANCH", "").strip() or repo.DEFAULT_BRANCH
    return branch if branch.startswith("refs/") else f"refs/heads/{branch}"


def deploy_refs(config: Mapping[str, str]) -> tuple[str, ...]:
    """Every ref a push to deploys: DEPLOY_BRANCH's alone when it is set; else ``main``
    and ``master`` (Heroku deploys either)."""
    if config.get("DEPLOY_BRANCH", "").strip():
        return (deploy_ref(config),)
    return (f"refs/heads/{repo.DEFAULT_BRANCH}", "refs/heads/master")


def short_ref(ref: str) -> str:
    return ref.removeprefix("refs/heads/")


class Plan(NamedTuple):
    """What a push will do: the update to deploy (if any) and what to tell the pusher."""

    deploy: RefUpdate | None
    notes: tuple[str, ...]


def plan_push(updates: list[RefUpdate], deploys: tuple[str, ...]) -> Plan:
    """Decide what a push does: the last update of a deploy branch deploys. Raises Refused
    when it deletes a deploy branch and deploys none (a push that renames master to main
    deletes one and updates the other)."""
    notes = []
    chosen = None
    shown = " or ".join(short_ref(ref) for ref in deploys)
    deleted = [u for u in updates if u.ref in deploys and u.deleted]
    for update in updates:
        if update.ref not in deploys and update.deleted:
            notes.append(f"-----> Deleted {short_ref(update.ref)}")
        elif update.ref not in deploys:
            notes.append(
                f"-----> Pushed to {short_ref(update.ref)}; only {shown} deploys "
                "(set DEPLOY_BRANCH to change it)"
            )
        elif not update.deleted:
            if chosen is not None:
                notes.append(
                    f"-----> Pushed to {short_ref(chosen.ref)}; {short_ref(update.ref)} deploys"
                )
            chosen = update
    if deleted and chosen is None:
        raise Refused(
            f"refusing to delete {short_ref(deleted[0].ref)}, the branch this app deploys "
            "from (set DEPLOY_BRANCH to deploy from another branch first)"
        )
    notes += [f"-----> Deleted {short_ref(update.ref)}" for update in deleted]
    return Plan(chosen, tuple(notes))


def receive(repository: Path, updates_text: str, request: Request, write: Write) -> None:
    """The pre-receive hook's work, in ``repository`` (the hook's working directory).

    Raises:
        DokuenError: the push must be rejected (the message says why); nothing changed.
    """
    app = repo.app_of_repo(repository)
    updates = parse_updates(updates_text)
    if not updates:
        return
    config = request("config", {"app": app}, write)
    plan = plan_push(updates, deploy_refs(config))
    for note in plan.notes:
        write(note + "\n")
    update = plan.deploy
    if update is None:
        return
    with _turn(repository, app, write):
        _wait_for_landing(repository)
        now = repo.ref_value(repository, update.ref)
        if now != (None if update.created else update.old):
            raise Conflict(
                f"{short_ref(update.ref)} of {app} moved to {(now or 'nothing')[:7]} while this "
                "push waited (another push deployed first); pull, then push again"
            )
        write(f"-----> Deploying {short_ref(update.ref)} ({update.new[:7]}) to {app}\n")
        source = _export(repository, update.new)

        # The scratch directory means nothing to the pusher: they pushed a commit.
        def unscratch(text: str) -> str:
            return text.replace(f"{source}/", "").replace(str(source), f"commit {update.new[:7]}")

        try:
            args = {"app": app, "dir": str(source), "commit": update.new}
            result = request("deploy", args, lambda text: write(unscratch(text)))
        except DokuenError as exc:
            raise type(exc)(unscratch(str(exc))) from None
        finally:
            shutil.rmtree(source, ignore_errors=True)
        write(f"-----> {app} {result['release']} is running ({update.new[:7]})\n")
        if result.get("url"):
            write(f"       {result['url']} deployed to Dokuen\n")
        _mark_landing(repository, update)


def _export(repository: Path, commit: str) -> Path:
    """A fresh directory under ``$DOKUEN_HOME/tmp`` holding the commit's tree."""
    scratch = repository.parents[2] / "tmp"
    scratch.mkdir(mode=0o700, exist_ok=True)
    while True:  # mkdtemp's way, without tempfile: a new name, made by us alone
        source = scratch / f"push-{os.urandom(6).hex()}"
        try:
            source.mkdir(mode=0o700)
            break
        except FileExistsError:
            continue
    try:
        repo.export_commit(repository, commit, source)
    except BaseException:
        shutil.rmtree(source, ignore_errors=True)
        raise
    return source


@contextlib.contextmanager
def _turn(repository: Path, app: str, write: Write) -> Iterator[None]:
    """Hold the repository's push lock (released when the hook's process ends, whatever
    way it ends)."""
    fd = os.open(repository / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            write(f"-----> Waiting for another push to {app} to finish\n")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# git updates the ref only after the hook has exited, and so after it let go of the lock.
# The hook that deployed leaves a note (its git receive-pack's pid and the commit); the next
# push waits until the ref shows that commit or that receive-pack is gone, so it never
# compares against a ref that is about to move.


def _mark_landing(repository: Path, update: RefUpdate) -> None:
    note = {"pid": os.getppid(), "ref": update.ref, "new": update.new}
    (repository / LANDING_FILE).write_text(json.dumps(note), encoding="utf-8")


def _wait_for_landing(repository: Path) -> None:
    path = repository / LANDING_FILE
    try:
        note = json.loads(path.read_text(encoding="utf-8"))
        pid, ref, new = int(note["pid"]), str(note["ref"]), str(note["new"])
    except FileNotFoundError:
        return
    except (ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)  # unreadable: it cannot tell us anything
        return
    deadline = time.monotonic() + LANDING_TIMEOUT
    while _alive(pid) and repo.ref_value(repository, ref) != new:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
