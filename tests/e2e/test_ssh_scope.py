"""Keys limited to some apps (ssh-keys:add --app), end to end through a real sshd: a scoped
key pushes to and runs commands on its apps only; an admin key keeps every right."""

import json
from dataclasses import replace
from pathlib import Path

from tests.e2e.conftest import SSH_KEY, Dokuen
from tests.e2e.gitwork import Work, remote_lines
from tests.e2e.sshd import Sshd, keygen
from tests.e2e.test_git_push import WEB
from tests.e2e.test_ssh import daemon_events

CI_IS = "ssh key 'ci' (apps: blog, notes)"


def without_ssh_noise(stderr: str) -> str:
    return "".join(line for line in stderr.splitlines(True) if not line.startswith("Warning: "))


def test_a_scoped_key_pushes_and_runs_commands_on_its_apps_only(
    dokuen: Dokuen, authorized: Sshd, tmp_path: Path
) -> None:
    keygen(tmp_path / "ci")
    added = dokuen.ctl(
        "ssh-keys:add", "ci", str(tmp_path / "ci.pub"), "--app", "notes", "--app", "blog"
    )
    assert added.stdout.endswith(", only for blog, notes)\n"), added.stdout
    bad = dokuen.ctl("ssh-keys:add", "ci2", str(tmp_path / "ci.pub"), "--app", "Blog", check=False)
    assert bad.returncode == 2
    assert "invalid app name 'Blog'" in bad.stderr
    listing = dokuen.ctl("ssh-keys").stdout.splitlines()
    assert listing[1].endswith("  all (admin)")
    assert listing[1].startswith(SSH_KEY)
    assert listing[2].startswith("ci ")
    assert listing[2].endswith("  blog, notes")
    assert [k["apps"] for k in json.loads(dokuen.ctl("ssh-keys", "--json").stdout)] == [
        [],
        ["blog", "notes"],
    ]
    line = (dokuen.home / ".ssh" / "authorized_keys").read_text().splitlines()[-1]
    assert 'ssh-serve ci --app blog --app notes",restrict,pty ' in line
    ci = replace(authorized, client_key=tmp_path / "ci")

    # Its own app: the first push creates it.
    work = Work.create(tmp_path / "blog", WEB, ssh=ci.git_ssh_command)
    push = work.push(ci.url("blog"), "main")
    assert push.returncode == 0, push.stderr
    assert "-----> Released v1" in remote_lines(push.stderr)
    # Another app: refused, and not created.
    push = work.push(ci.url("shop"), "main")
    assert push.returncode != 0
    assert f"error: {CI_IS} may not push to app 'shop'" in push.stderr
    dokuen.ctl("apps:create", "other")
    push = work.push(ci.url("other"), "main")
    assert f"error: {CI_IS} may not push to app 'other'" in push.stderr
    names = [app["name"] for app in json.loads(dokuen.ctl("apps", "--json").stdout)]
    assert names == ["blog", "other"]
    assert json.loads(dokuen.ctl("releases", "other", "--json").stdout) == []

    for allowed in (
        "dokuenctl ps blog",
        "dokuenctl config:set blog GREETING=hi",
        "dokuenctl config blog",
        "dokuenctl logs blog -n 5",
        "dokuenctl releases blog",
        "dokuenctl run blog 'echo $APP'",
        "dokuenctl apps:create notes",
    ):
        result = ci.ssh(allowed)
        assert result.returncode == 0, (allowed, result.stderr)
    assert "GREETING=hi" in ci.ssh("dokuenctl config blog").stdout
    assert ci.ssh("dokuenctl run blog 'echo $APP'").stdout == "blog\n"

    for asked, message in [
        ("dokuenctl apps", f"{CI_IS} may only use commands that name one of its apps; dokuen"),
        ("dokuenctl status", "dokuenctl status is for admin keys"),
        ("dokuenctl ps", f"{CI_IS} may only use commands that name one of its apps (dokuen"),
        ("dokuenctl logs", f"{CI_IS} may only use commands that name one of its apps (dokuen"),
        ("dokuenctl config other", f"{CI_IS} may not use app 'other'"),
        ("dokuenctl config:set other A=1", f"{CI_IS} may not use app 'other'"),
        ("dokuenctl ps other", f"{CI_IS} may not use app 'other'"),
        ("dokuenctl logs other", f"{CI_IS} may not use app 'other'"),
        ("dokuenctl run other id", f"{CI_IS} may not use app 'other'"),
        ("dokuenctl apps:create shop", f"{CI_IS} may not use app 'shop'"),
        ("dokuenctl apps:destroy blog --confirm blog", "dokuenctl apps:destroy is for admin"),
        ("dokuenctl ssh-keys", "dokuenctl ssh-keys is for admin keys"),
        ("dokuenctl ssh-keys:remove ci", "dokuenctl ssh-keys:remove is for admin keys"),
        ("dokuenctl backups other", f"{CI_IS} may not use app 'other'"),
        ("dokuenctl backups:capture --all", "--all is for admin keys"),
        ("dokuenctl backups:restore blog --from other --force", "may not use app 'other'"),
        ("dokuenctl service:install --print", "service:install is not available over ssh"),
    ]:
        result = ci.ssh(asked)
        said = without_ssh_noise(result.stderr)
        assert (result.returncode, result.stdout) == (1, ""), (asked, result)
        assert said.startswith(f"error: {CI_IS} may ") or said.startswith("error: service:")
        assert message in said, (asked, said)
        assert len(said.splitlines()) == 1, said
    added = ci.ssh("dokuenctl ssh-keys:add more -", stdin=(tmp_path / "ci.pub").read_text())
    assert "dokuenctl ssh-keys:add is for admin keys" in added.stderr
    assert json.loads(dokuen.ctl("config", "other", "--json").stdout) == {}
    assert [k["name"] for k in json.loads(dokuen.ctl("ssh-keys", "--json").stdout)] == [
        SSH_KEY,
        "ci",
    ]
    refusals = {(e["key"], e["command"]) for e in daemon_events(dokuen, "ssh.refused")}
    assert ("ci", "dokuenctl apps") in refusals
    assert ("ci", "dokuenctl git:repo") in refusals

    # The admin key keeps every right: every app, and a push that creates one.
    assert authorized.ssh("dokuenctl apps").returncode == 0
    assert authorized.ssh("dokuenctl config:set other A=1").returncode == 0
    admin_work = Work.create(tmp_path / "shop", WEB, ssh=authorized.git_ssh_command)
    push = admin_work.push(authorized.url("shop"), "main")
    assert push.returncode == 0, push.stderr
    names = [app["name"] for app in json.loads(dokuen.ctl("apps", "--json").stdout)]
    assert names == ["blog", "notes", "other", "shop"]
