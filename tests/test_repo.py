"""An app's bare repository with real git: making it, its hook, and exporting a commit."""

import contextlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dokuen.deploy.repo import (
    app_of_repo,
    ensure_repo,
    export_commit,
    ref_value,
    render_hook,
    render_hooks,
)
from dokuen.entrypoint import Entrypoint
from dokuen.errors import DokuenError, InvalidName, SettingsError
from tests.test_nginx import golden

ENTRY = Entrypoint(Path("/usr/bin/dokuenctl"), Path("/var/lib/dokuen/dokuend.sock"))
GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def git(cwd: Path, *args: str, input_text: str | None = None) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=GIT_ENV,
        capture_output=True,
        text=True,
        check=True,
        input=input_text,
    )
    return done.stdout.strip()


def test_the_hook_is_one_static_script() -> None:
    golden("pre-receive", render_hook(ENTRY))


def test_every_hook_is_a_static_script() -> None:
    hooks = render_hooks(ENTRY)
    assert sorted(hooks) == ["post-receive", "pre-receive"]
    for name, script in hooks.items():
        golden(name, script)
    # Without a backup target no post-receive hook runs after each push.
    assert sorted(render_hooks(ENTRY, backups=False)) == ["pre-receive"]


def test_the_hook_runs_the_light_githook_on_dokuenctls_python(tmp_path: Path) -> None:
    python = tmp_path / "venv" / "bin" / "python3"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    dokuenctl = python.parent / "dokuenctl"
    dokuenctl.write_text(f"#!{python}\nfrom dokuen.cli.dokuenctl import main\n")
    entry = Entrypoint(dokuenctl, Path("/var/lib/dokuen/dokuend.sock"))
    hook = render_hook(entry)
    assert hook.splitlines()[-1] == (
        f"exec {python} -I -m dokuen.cli.githook --socket /var/lib/dokuen/dokuend.sock"
    )
    # A #! line that is not one plain path (env, options, spaces): dokuenctl git-hook.
    for first in ("#!/usr/bin/env python3", f"#!{python} -E", "#!/tmp/a b/python", ""):
        dokuenctl.write_text(f"{first}\nfrom dokuen.cli.dokuenctl import main\n")
        assert render_hook(entry).splitlines()[-1] == (
            f"exec {dokuenctl} --socket /var/lib/dokuen/dokuend.sock git-hook"
        )


def test_the_light_hook_says_its_usage_and_a_missing_daemon_in_one_line(tmp_path: Path) -> None:
    def hook(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-I", "-m", "dokuen.cli.githook", *args]
        return subprocess.run(
            argv, cwd=tmp_path, input="", capture_output=True, text=True, check=False
        )

    assert hook().returncode == 2
    assert hook("--socket", "relative.sock").returncode == 2
    repository = tmp_path / "apps" / "blog" / "repo.git"
    repository.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-I", "-m", "dokuen.cli.githook", "--socket", str(tmp_path / "no.sock")],
        cwd=repository,
        input="0" * 40 + " " + "1" * 40 + " refs/heads/main\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: ")
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_hook_left_out_is_removed_and_other_hooks_stay(tmp_path: Path) -> None:
    path = tmp_path / "repo.git"
    ensure_repo(path, render_hooks(ENTRY))
    assert (path / "hooks" / "post-receive").is_file()
    (path / "hooks" / "update").write_text("#!/bin/sh\n")  # not one of dokuend's
    ensure_repo(path, render_hooks(ENTRY, backups=False))
    assert not (path / "hooks" / "post-receive").exists()
    assert (path / "hooks" / "pre-receive").is_file()
    assert (path / "hooks" / "update").is_file()
    ensure_repo(path, render_hooks(ENTRY, backups=True))
    assert (path / "hooks" / "post-receive").is_file()


def test_ensure_repo_makes_a_bare_repository_once_and_keeps_its_hook_current(
    tmp_path: Path,
) -> None:
    path = tmp_path / "apps" / "blog" / "repo.git"
    path.parent.mkdir(parents=True)
    assert ensure_repo(path, {"pre-receive": "#!/bin/sh\nexit 0\n"}) is True
    assert git(path, "rev-parse", "--is-bare-repository") == "true"
    assert git(path, "symbolic-ref", "HEAD") == "refs/heads/main"
    hook = path / "hooks" / "pre-receive"
    assert stat.S_IMODE(hook.stat().st_mode) == 0o755
    assert not list((path / "hooks").glob("*.sample"))
    assert (
        ensure_repo(path, {"pre-receive": "#!/bin/sh\nexit 1\n"}) is False
    )  # exists: only the hook changes
    assert hook.read_text() == "#!/bin/sh\nexit 1\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["repo.git"]


def test_ensure_repo_refuses_a_path_that_is_something_else(tmp_path: Path) -> None:
    (tmp_path / "repo.git").mkdir()
    with pytest.raises(SettingsError, match="exists but is not a git repository"):
        ensure_repo(tmp_path / "repo.git", {"pre-receive": "#!/bin/sh\n"})


@pytest.mark.parametrize(
    ("path", "app"),
    [("/var/lib/dokuen/apps/blog/repo.git", "blog"), ("/h/apps/a-1/repo.git", "a-1")],
)
def test_app_of_repo(path: str, app: str) -> None:
    assert app_of_repo(Path(path)) == app


@pytest.mark.parametrize(
    "path",
    ["/h/apps/Blog/repo.git", "/h/apps/blog/other.git", "/h/blog/repo.git", "/repo.git"],
)
def test_app_of_repo_refuses_other_paths(path: str) -> None:
    with pytest.raises(InvalidName):
        app_of_repo(Path(path))


@pytest.fixture
def pushed(tmp_path: Path) -> tuple[Path, Path]:
    """A bare repository and a work tree whose commits are pushed into it."""
    bare = tmp_path / "repo.git"
    ensure_repo(bare, {"pre-receive": "#!/bin/sh\nexit 0\n"})
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    return bare, work


def commit_and_push(bare: Path, work: Path) -> str:
    git(work, "add", "-A")
    git(work, "commit", "-qm", "c")
    git(work, "push", "-q", str(bare), "HEAD:refs/heads/main")
    return git(work, "rev-parse", "HEAD")


def test_export_commit_writes_the_tree_with_modes_and_links(pushed: tuple[Path, Path]) -> None:
    bare, work = pushed
    (work / "Procfile").write_text("web: ./run\n")
    (work / "run").write_text("#!/bin/sh\n")
    (work / "run").chmod(0o755)
    (work / "lib").mkdir()
    (work / "lib" / "a.txt").write_text("a")
    (work / "link").symlink_to("lib/a.txt")
    commit = commit_and_push(bare, work)
    assert ref_value(bare, "refs/heads/main") == commit
    assert ref_value(bare, "refs/heads/nope") is None
    out = bare.parent / "out"
    out.mkdir()
    export_commit(bare, commit, out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "Procfile",
        "lib",
        "lib/a.txt",
        "link",
        "run",
    ]
    assert os.access(out / "run", os.X_OK)
    assert (out / "link").read_text() == "a"


def test_export_commit_refuses_a_link_out_of_the_tree(pushed: tuple[Path, Path]) -> None:
    bare, work = pushed
    (work / "passwd").symlink_to("/etc/passwd")
    commit = commit_and_push(bare, work)
    out = bare.parent / "out"
    out.mkdir()
    with pytest.raises(DokuenError, match=f"^commit {commit[:7]} cannot be deployed: .*passwd"):
        export_commit(bare, commit, out)


def test_export_commit_refuses_a_relative_link_that_climbs_out(pushed: tuple[Path, Path]) -> None:
    bare, work = pushed
    (work / "lib").mkdir()
    (work / "lib" / "up").symlink_to("../../x")
    (work / "lib" / "in").symlink_to("../Procfile")  # inside the tree: fine on its own
    commit = commit_and_push(bare, work)
    out = bare.parent / "out"
    out.mkdir()
    with pytest.raises(DokuenError, match=r"lib/up is a link out of the app's tree"):
        export_commit(bare, commit, out)


def test_export_commit_never_writes_through_a_link(pushed: tuple[Path, Path]) -> None:
    # A hand-made tree where "d" is a link to a directory outside and "d/f" a file (what
    # tarfile's filter exists for): git never writes a path through a link.
    bare, work = pushed
    outside = bare.parent / "outside"
    outside.mkdir()
    blob = git(work, "hash-object", "-w", "--stdin", input_text="owned\n")
    link = git(work, "hash-object", "-w", "--stdin", input_text=str(outside))
    inner = git(work, "mktree", input_text=f"100644 blob {blob}\tf\n")
    tree = git(work, "mktree", input_text=f"120000 blob {link}\td\n040000 tree {inner}\td\n")
    commit = git(work, "commit-tree", tree, "-m", "evil")
    git(work, "push", "-q", str(bare), f"{commit}:refs/heads/evil")
    out = bare.parent / "out"
    out.mkdir()
    with contextlib.suppress(DokuenError):  # git may refuse the tree or write "d" alone
        export_commit(bare, commit, out)
    assert list(outside.iterdir()) == []
    assert not (out / "d").is_symlink()


def test_export_commit_refuses_an_unknown_or_malformed_commit(pushed: tuple[Path, Path]) -> None:
    bare, _work = pushed
    with pytest.raises(DokuenError, match="cannot check out commit 1111111"):
        export_commit(bare, "1" * 40, bare.parent)
    with pytest.raises(InvalidName, match="not a full commit id"):
        export_commit(bare, "--output=/tmp/x", bare.parent)


def test_export_commit_refuses_a_chain_of_links_that_climbs_out(pushed: tuple[Path, Path]) -> None:
    # "here" points at its own directory; "shadow" reads as here/here/.../../../etc/shadow,
    # which a lexical look folds back into the tree (here/.. is "."), but the kernel follows
    # each "here" first and climbs one real level per "..": to /etc/shadow.
    bare, work = pushed
    (work / "Procfile").write_text("web: ./run\n")
    (work / "here").symlink_to(".")
    depth = len(bare.parent.parts) + 4
    (work / "shadow").symlink_to("/".join(["here"] * depth + [".."] * depth + ["etc/shadow"]))
    commit = commit_and_push(bare, work)
    out = bare.parent / "out"
    out.mkdir()
    assert os.path.realpath(work / "shadow") == "/etc/shadow"  # what the link really reaches
    with pytest.raises(DokuenError, match=r"shadow is a link out of the app's tree"):
        export_commit(bare, commit, out)
