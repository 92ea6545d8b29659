"""git push deploys, over a local path: the app's bare repository and its pre-receive hook."""

import json
import shutil
import stat
import subprocess
import time
from pathlib import Path

from tests.e2e.conftest import BIN, Dokuen, get_json, wait_for
from tests.e2e.gitwork import Work, remote_lines

WEB = "web: python3 envserver.py\n"


def answering(dokuen: Dokuen, app: str) -> dict[str, str] | None:
    """The app's web.1 environment once it answers, else None."""
    rows = dokuen.running(app, 1)
    if not rows:
        return None
    try:
        env: dict[str, str] = get_json(rows[0]["port"])
    except OSError:
        return None
    return env


def repo_of(dokuen: Dokuen, app: str) -> Path:
    return dokuen.home / "apps" / app / "repo.git"


def test_apps_create_makes_a_bare_repository_with_the_hook(dokuen: Dokuen) -> None:
    dokuen.ctl("apps:create", "blog")
    repo = repo_of(dokuen, "blog")
    head = subprocess.run(
        ["git", "symbolic-ref", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    )
    assert head.stdout == "refs/heads/main\n"
    hook = repo / "hooks" / "pre-receive"
    assert stat.S_IMODE(hook.stat().st_mode) == 0o755
    # dokuenctl's own interpreter runs the light hook (no click to import).
    python = (BIN / "dokuenctl").read_text().splitlines()[0].removeprefix("#!")
    assert hook.read_text().splitlines()[-1] == (
        f"exec {python} -I -m dokuen.cli.githook --socket {dokuen.home}/dokuend.sock"
    )
    # No backup target: nothing runs after a push lands.
    assert not (repo / "hooks" / "post-receive").exists()


def test_a_push_to_main_deploys_and_the_pusher_sees_the_build(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    dokuen.ctl("apps:create", "blog")
    work = Work.create(tmp_path / "blog", WEB)
    started = time.monotonic()
    push = work.push(str(repo_of(dokuen, "blog")), "main")
    assert push.returncode == 0, push.stderr
    env = wait_for(lambda: answering(dokuen, "blog"), "blog to answer")
    live = time.monotonic() - started
    lines = remote_lines(push.stderr)
    assert lines[0] == f"-----> Deploying main ({work.head()[:7]}) to blog"
    assert "-----> Released v1" in lines
    assert lines[-2] == f"-----> blog v1 is running ({work.head()[:7]})"
    url = json.loads(dokuen.ctl("apps", "--json").stdout)[0]["url"]
    assert lines[-1] == f"       {url} deployed to Dokuen"  # as Heroku ends a push
    assert not [line for line in lines if "/tmp/push-" in line or "/tmp/" in line]
    assert env["APP"] == "blog"
    assert (dokuen.home / "apps/blog/releases/v1/envserver.py").exists()
    assert not (dokuen.home / "apps/blog/releases/v1/.git").exists()
    assert list((dokuen.home / "tmp").iterdir()) == []  # the exported tree is gone
    print(f"local push to live: {live:.2f}s")


def test_a_failed_deploy_rejects_the_push_and_the_old_release_keeps_serving(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    dokuen.ctl("apps:create", "blog")
    repo = str(repo_of(dokuen, "blog"))
    work = Work.create(tmp_path / "blog", WEB)
    assert work.push(repo, "main").returncode == 0
    (first,) = wait_for(lambda: dokuen.running("blog", 1), "v1 running")
    good = work.head()
    work.commit("oops", {"Procfile": "web python3 envserver.py\n"})
    push = work.push(repo, "main")
    assert push.returncode == 1
    assert " ! [remote rejected] main -> main (pre-receive hook declined)" in push.stderr
    assert "remote: error: Procfile:1: expected 'TYPE: COMMAND'" in push.stderr
    (row,) = dokuen.ps("blog")
    assert (row["pid"], row["state"]) == (first["pid"], "running")
    assert release_names(dokuen, "blog") == ["v1"]
    assert work.git("ls-remote", repo, "main").stdout.split()[0] == good
    assert list((dokuen.home / "tmp").iterdir()) == []


def test_a_failing_buildpack_rejects_the_push_and_a_good_one_records_the_commit(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    dokuen.ctl("apps:create", "blog")
    repo = str(repo_of(dokuen, "blog"))
    work = Work.create(tmp_path / "blog", WEB)
    assert work.push(repo, "main").returncode == 0
    (first,) = wait_for(lambda: dokuen.running("blog", 1), "v1 running")
    (v1,) = json.loads(dokuen.ctl("releases", "blog", "--json").stdout)
    assert v1["commit"] == work.head()
    assert v1["description"] == f"Deploy {work.head()[:7]}"  # Heroku's words
    # The table's COMMIT is the same 7 characters as the description and git's short form.
    row = dokuen.ctl("releases", "blog").stdout.splitlines()[1].split()
    assert (row[:3], row[4]) == (["v1", "Deploy", work.head()[:7]], work.head()[:7])
    pack = tmp_path / "failing"
    (pack / "bin").mkdir(parents=True)
    for name, body in {
        "detect": "echo Failing",
        "compile": "echo ' !     no luck'; exit 1",
    }.items():
        (pack / "bin" / name).write_text(f"#!/bin/sh\n{body}\n")
        (pack / "bin" / name).chmod(0o755)
    dokuen.ctl("config:set", "blog", f"BUILDPACK_URL={pack}")  # v2: v1's slug, this config
    (first,) = wait_for(lambda: dokuen.running("blog", 1), "v2 running with the config")
    work.commit("more", {"README": "more\n"})
    push = work.push(repo, "main")
    assert push.returncode == 1
    lines = remote_lines(push.stderr)
    assert " !     no luck" in lines
    assert any("buildpack Failing failed to compile the app" in line for line in lines)
    assert [row["pid"] for row in dokuen.ps("blog")] == [first["pid"]]
    assert release_names(dokuen, "blog") == ["v2", "v1"]


def test_a_push_deploys_the_tree_as_committed_whatever_gitattributes_says(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    dokuen.ctl("apps:create", "blog")
    work = Work.create(tmp_path / "blog", WEB)
    work.commit(
        "attributes",
        {
            ".gitattributes": "kept.txt export-ignore\nversion.txt export-subst\n",
            "version.txt": "v=$Format:%H$\n",
            "kept.txt": "kept\n",
        },
    )
    assert work.push(str(repo_of(dokuen, "blog")), "main").returncode == 0
    release = dokuen.home / "apps/blog/releases/v1"
    assert (release / "kept.txt").read_text() == "kept\n"
    assert (release / "version.txt").read_text() == "v=$Format:%H$\n"


def test_a_push_to_master_deploys_too(dokuen: Dokuen, tmp_path: Path) -> None:
    dokuen.ctl("apps:create", "blog")
    repo = str(repo_of(dokuen, "blog"))
    work = Work.create(tmp_path / "blog", WEB)
    push = work.push(repo, "main:master")
    assert push.returncode == 0, push.stderr
    assert "-----> Released v1" in remote_lines(push.stderr)
    wait_for(lambda: answering(dokuen, "blog"), "blog to answer")
    # Renaming master to main in one push deploys main and deletes master.
    work.commit("second")
    push = work.push(repo, "main:main", ":master")
    assert push.returncode == 0, push.stderr
    assert "-----> Released v2" in remote_lines(push.stderr)
    assert not work.git("ls-remote", repo, "master").stdout.strip()


def release_names(dokuen: Dokuen, app: str) -> list[str]:
    """The app's releases, newest first."""
    return [r["version"] for r in json.loads(dokuen.ctl("releases", app, "--json").stdout)]


def test_other_branches_are_kept_not_deployed_and_deploy_branch_picks_one(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    dokuen.ctl("apps:create", "blog")
    repo = str(repo_of(dokuen, "blog"))
    work = Work.create(tmp_path / "blog", WEB)
    push = work.push(repo, "main:feature")
    assert push.returncode == 0, push.stderr
    assert remote_lines(push.stderr) == [
        "-----> Pushed to feature; only main or master deploys (set DEPLOY_BRANCH to change it)"
    ]
    assert dokuen.ps("blog") == []
    assert release_names(dokuen, "blog") == []
    dokuen.ctl("config:set", "blog", "DEPLOY_BRANCH=production")
    assert "only production deploys" in work.push(repo, "main").stderr
    push = work.push(repo, "main:production")
    assert push.returncode == 0, push.stderr
    assert "-----> Released v1" in remote_lines(push.stderr)
    deleted = work.push(repo, ":production")
    assert deleted.returncode == 1
    assert "refusing to delete production, the branch this app deploys from" in deleted.stderr
    assert work.git("ls-remote", repo, "production").stdout.strip()


def test_an_app_made_before_repositories_gets_one_when_dokuend_starts(dokuen: Dokuen) -> None:
    dokuen.ctl("apps:create", "blog")
    shutil.rmtree(repo_of(dokuen, "blog"))
    dokuen.terminate()
    dokuen.start()
    assert (repo_of(dokuen, "blog") / "hooks" / "pre-receive").exists()


def test_a_push_and_a_deploy_at_once_take_turns(dokuen: Dokuen, tmp_path: Path) -> None:
    """The daemon's per-app lock: the second deploy waits for the first, whole."""
    order = tmp_path / "order"
    dokuen.ctl("apps:create", "blog")

    def slow(name: str) -> str:
        return f"release: echo begin {name} >> {order}; sleep 1; echo end {name} >> {order}\n"

    work = Work.create(tmp_path / "pushed", WEB + slow("push"))
    push = work.start_push(str(repo_of(dokuen, "blog")), "main")
    wait_for(order.exists, "the push's release phase to begin")
    other = Work.create(tmp_path / "deployed", WEB + slow("deploy"))
    assert order.read_text() == "begin push\n"  # the deploy below is asked for mid-push
    deploy = dokuen.ctl("deploy", "blog", str(other.path))
    _out, err = push.communicate(timeout=60)
    assert push.returncode == 0, err
    assert "blog v2 is running" in deploy.stdout
    assert order.read_text().splitlines() == [
        "begin push",
        "end push",
        "begin deploy",
        "end deploy",
    ]


def test_two_pushes_at_once_to_one_app_take_turns_and_the_second_is_told_why(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    """Both start from the same commit: the first deploys; git would refuse the second's ref
    update, so the hook refuses it first, before it deploys anything."""
    order = tmp_path / "order"
    repo = str(repo_of(dokuen, "blog"))
    dokuen.ctl("apps:create", "blog")
    base = Work.create(tmp_path / "base", WEB)
    assert base.push(repo, "main").returncode == 0
    clones = []
    for name in ("first", "second"):
        subprocess.run(["git", "clone", "-q", repo, str(tmp_path / name)], check=True)
        clone = Work(tmp_path / name)
        release = f"release: echo {name} >> {order}; sleep 1\n"
        clone.commit(name, {"Procfile": WEB + release})
        clones.append(clone)
    first = clones[0].start_push(repo, "main")
    wait_for(order.exists, "the first push's release phase")
    second = clones[1].start_push(repo, "main")
    _out, first_err = first.communicate(timeout=60)
    _out, second_err = second.communicate(timeout=60)
    assert first.returncode == 0, first_err
    assert second.returncode == 1
    lines = remote_lines(second_err)
    assert lines[0] == "-----> Waiting for another push to blog to finish"
    assert lines[1].startswith(
        f"error: main of blog moved to {clones[0].head()[:7]} while this push waited"
    )
    assert order.read_text() == "first\n"
    assert base.git("ls-remote", repo, "main").stdout.split()[0] == clones[0].head()
    assert release_names(dokuen, "blog") == ["v2", "v1"]
