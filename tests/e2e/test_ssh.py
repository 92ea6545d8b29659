"""ssh keys and git push over ssh, end to end: a real sshd reading the authorized_keys that
dokuend writes, real git and ssh clients."""

import json
import os
import stat
import subprocess
import time
from pathlib import Path

from tests.e2e.conftest import BIN, SSH_KEY, Dokuen, wait_for
from tests.e2e.gitwork import Work, remote_lines
from tests.e2e.sshd import Sshd, keygen
from tests.e2e.test_git_push import WEB, answering, release_names

KEY = SSH_KEY  # the fixture authorized adds the client's key by this name


def ctl_with_stdin(dokuen: Dokuen, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dokuenctl"), *args],
        input=stdin,
        env=dokuen.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def fingerprint(public_key: Path) -> str:
    done = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(public_key)], capture_output=True, text=True, check=True
    )
    return done.stdout.split()[1]


def daemon_events(dokuen: Dokuen, name: str) -> list[dict[str, str]]:
    events = [json.loads(line) for line in dokuen.daemon_stderr().splitlines()]
    return [event for event in events if event["event"] == name]


def test_ssh_keys_add_list_remove_and_what_is_not_a_public_key(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    alice, bob = keygen(tmp_path / "alice"), keygen(tmp_path / "bob")
    assert dokuen.ctl("ssh-keys").stdout.startswith("no ssh keys yet")
    added = dokuen.ctl("ssh-keys:add", "alice", str(alice))
    assert added.stdout == f"added ssh key alice (ssh-ed25519 {fingerprint(alice)})\n"
    added = ctl_with_stdin(dokuen, bob.read_text(), "ssh-keys:add", "bob@ci", "-")
    assert added.returncode == 0, added.stderr
    assert dokuen.ctl("ssh-keys").stdout.splitlines() == [
        f"NAME    TYPE         {'FINGERPRINT'.ljust(len(fingerprint(alice)))}  APPS",
        f"alice   ssh-ed25519  {fingerprint(alice)}  all (admin)",
        f"bob@ci  ssh-ed25519  {fingerprint(bob)}  all (admin)",
    ]
    assert json.loads(dokuen.ctl("ssh-keys", "--json").stdout)[1] == {
        "name": "bob@ci",
        "type": "ssh-ed25519",
        "fingerprint": fingerprint(bob),
        "apps": [],
    }
    ssh_dir = dokuen.home / ".ssh"
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ssh_dir / "authorized_keys").stat().st_mode) == 0o600
    line = (ssh_dir / "authorized_keys").read_text().splitlines()[-1]
    blob = bob.read_text().split()[1]
    assert line == (
        f'command="{BIN}/dokuenctl --socket {dokuen.home}/dokuend.sock ssh-serve bob@ci",'
        f"restrict,pty ssh-ed25519 {blob} bob@ci"
    )

    def refused(name: str, text: str) -> str:
        result = ctl_with_stdin(dokuen, text, "ssh-keys:add", name, "-")
        assert result.returncode == 1, result
        return result.stderr

    assert refused("alice", bob.read_text()) == (
        "error: there is already an ssh key named 'alice'\n"
    )
    assert refused("carol", alice.read_text()) == (
        "error: that key is already authorized, as 'alice'\n"
    )
    private = (tmp_path / "alice").read_text()
    assert refused("carol", private).startswith("error: that is a private key: give its public")
    assert refused("carol", "hello world\n").startswith("error: not a public key: it starts")
    assert refused("carol", "").startswith("error: no public key in it")
    assert refused("carol", alice.read_text() + bob.read_text()).startswith("error: it holds 2")
    bad_name = dokuen.ctl("ssh-keys:add", "carol smith", str(alice), check=False)
    assert bad_name.returncode == 2
    assert "invalid ssh key name 'carol smith'" in bad_name.stderr
    assert dokuen.ctl("ssh-keys:add", "carol", str(tmp_path / "nope"), check=False).returncode == 2

    assert dokuen.ctl("ssh-keys:remove", "alice").stdout == "removed ssh key alice\n"
    assert [k["name"] for k in json.loads(dokuen.ctl("ssh-keys", "--json").stdout)] == ["bob@ci"]
    again = dokuen.ctl("ssh-keys:remove", "alice", check=False)
    assert (again.returncode, again.stderr) == (1, "error: no ssh key named 'alice'\n")


def test_a_push_over_ssh_creates_the_app_deploys_it_and_refuses_a_bad_commit(
    dokuen: Dokuen, authorized: Sshd, tmp_path: Path
) -> None:
    work = Work.create(tmp_path / "blog", WEB, ssh=authorized.git_ssh_command)
    started = time.monotonic()
    push = work.push(authorized.url("blog"), "main")
    assert push.returncode == 0, push.stderr
    env = wait_for(lambda: answering(dokuen, "blog"), "blog to answer")
    live = time.monotonic() - started
    assert "-----> Created app blog on its first push" in push.stderr
    lines = remote_lines(push.stderr)
    assert lines[0] == f"-----> Deploying main ({work.head()[:7]}) to blog"
    assert "-----> Released v1" in lines
    assert env["APP"] == "blog"
    print(f"ssh push to live (first push, app created): {live:.2f}s")

    # The scp-like form, as in the README: USER@HOST:APP.
    work.commit("second", {"VERSION": "2\n"})
    push = work.push(f"{authorized.user}@127.0.0.1:blog", "main")
    assert push.returncode == 0, push.stderr
    assert "-----> Released v2" in remote_lines(push.stderr)
    (serving,) = wait_for(lambda: dokuen.running("blog", 1), "v2 running")
    commands = [(e["key"], e["command"]) for e in daemon_events(dokuen, "ssh.command")]
    assert commands == [(KEY, "git-receive-pack '/blog'"), (KEY, "git-receive-pack 'blog'")]
    assert "blog[dokuen]: created by a push over ssh (key dev@laptop)" in dokuen.log()

    work.commit("broken", {"Procfile": "web python3 envserver.py\n"})
    push = work.push(authorized.url("blog"), "main")
    assert push.returncode == 1
    assert "remote: error: Procfile:1: expected 'TYPE: COMMAND'" in push.stderr
    assert " ! [remote rejected] main -> main (pre-receive hook declined)" in push.stderr
    assert answering(dokuen, "blog")
    assert dokuen.ps("blog")[0]["pid"] == serving["pid"]

    push = work.push(authorized.url("blog"), "main:feature")
    assert push.returncode == 0, push.stderr
    assert "only main or master deploys" in push.stderr
    assert release_names(dokuen, "blog") == ["v2", "v1"]


def test_an_ssh_key_runs_dokuenctl_and_nothing_else(
    dokuen: Dokuen, authorized: Sshd, tmp_path: Path
) -> None:
    dokuen.ctl("apps:create", "blog")
    apps = authorized.ssh("dokuenctl apps")
    assert apps.returncode == 0, apps.stderr
    assert apps.stdout.splitlines()[1].startswith("blog ")
    quoted = authorized.ssh("dokuenctl config:set blog 'GREETING=hello world; id'")
    assert quoted.returncode == 0, quoted.stderr
    assert dokuen.ctl("config:get", "blog", "GREETING").stdout == "hello world; id\n"
    secret = authorized.ssh("dokuenctl config:set blog STRIPE_KEY=sk_live_s3cret")
    assert secret.returncode == 0, secret.stderr
    assert "sk_live_s3cret" not in dokuen.daemon_stderr()  # the audit line keeps 3 words
    assert "dokuenctl config:set blog" in [
        e["command"] for e in daemon_events(dokuen, "ssh.command")
    ]

    # The bare form, as dokku and piku users type it.
    bare = authorized.ssh("config:set blog BARE=yes")
    assert bare.returncode == 0, bare.stderr
    assert dokuen.ctl("config:get", "blog", "BARE").stdout == "yes\n"
    listed = authorized.ssh("apps")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == apps.stdout
    logs = authorized.ssh("logs blog -n 5")
    assert logs.returncode == 0, logs.stderr
    assert "blog[dokuen]: config changed (BARE)" in logs.stdout

    canary = tmp_path / "canary"
    canary.mkdir()
    for asked, message in [
        (f"rm -rf {canary}", f"error: this ssh key cannot run 'rm -rf {canary}'; it may push"),
        ("rm -rf /", "error: this ssh key cannot run 'rm -rf /'"),
        ("dokuenctl --socket /tmp/other.sock apps", "error: dokuenctl options before"),
        ("dokuenctl git-hook", "error: dokuenctl git-hook is run by git and sshd"),
        ("git-upload-pack '/blog'", "error: this ssh key cannot fetch or clone"),
    ]:
        result = authorized.ssh(asked)
        assert (result.returncode, result.stdout) == (1, ""), asked
        assert result.stderr.startswith(message), (asked, result.stderr)
    # No shell reads the line: ';' is only a character of dokuenctl's first argument.
    chained = authorized.ssh(f"dokuenctl apps; rm -rf {canary}")
    assert chained.returncode == 2
    assert "No such command 'apps;'" in chained.stderr
    shell = authorized.ssh(stdin="echo pwned\n")
    assert shell.returncode == 1
    assert "error: this ssh key cannot open a shell" in shell.stderr
    assert "pwned" not in shell.stdout
    assert canary.is_dir()

    work = Work.create(tmp_path / "bad", WEB, ssh=authorized.git_ssh_command)
    push = work.push(f"{authorized.user}@127.0.0.1:Bad_App", "main")
    assert push.returncode != 0
    assert "error: invalid app name 'Bad_App' (use 1-63 lowercase letters" in push.stderr
    clone = subprocess.run(
        ["git", "clone", authorized.url("blog"), str(tmp_path / "clone")],
        env=work.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert clone.returncode != 0
    assert "this ssh key cannot fetch or clone" in clone.stderr
    assert [app["name"] for app in json.loads(dokuen.ctl("apps", "--json").stdout)] == ["blog"]
    refusals = daemon_events(dokuen, "ssh.refused")
    assert {e["key"] for e in refusals} == {KEY}
    assert f"rm -rf {canary}" in [e["command"] for e in refusals]

    # A key may add another one, its file on stdin.
    other = keygen(tmp_path / "other")
    added = authorized.ssh("dokuenctl ssh-keys:add ci -", stdin=other.read_text())
    assert added.stdout == f"added ssh key ci (ssh-ed25519 {fingerprint(other)})\n"

    dokuen.ctl("ssh-keys:remove", KEY)
    gone = authorized.ssh("dokuenctl apps")
    assert gone.returncode == 255
    assert "Permission denied (publickey)" in gone.stderr


def test_dokuend_rewrites_its_keys_when_dokuenctl_moved(dokuen: Dokuen, sshd: Sshd) -> None:
    """A line for another dokuenctl (a reinstall moved it) is written again on start."""
    dokuen.ctl("ssh-keys:add", KEY, f"{sshd.client_key}.pub")
    keys = dokuen.home / ".ssh" / "authorized_keys"
    keys.write_text(keys.read_text().replace(f"{BIN}/dokuenctl", "/old/venv/bin/dokuenctl"))
    dokuen.terminate()
    dokuen.start()
    assert f'command="{BIN}/dokuenctl --socket' in keys.read_text()
    assert sshd.ssh("dokuenctl apps").returncode == 0
    assert os.stat(keys).st_mode & 0o777 == 0o600
