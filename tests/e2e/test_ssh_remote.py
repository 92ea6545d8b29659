"""What an ssh key may do beyond a push, end to end through a real sshd: dokuenctl commands,
none of which reads or writes a path of the server for the key (deploy from a directory,
backups:download -o, ssh-keys:add FILE, pg:psql, service:*), and run goes through dokuend."""

import json
import subprocess
from dataclasses import replace
from pathlib import Path

from tests.e2e.conftest import Dokuen, write_app
from tests.e2e.sshd import Sshd, keygen
from tests.e2e.test_ssh import KEY, ctl_with_stdin, daemon_events, fingerprint

WEB = "web: python3 envserver.py\n"


def refused(server: Sshd, command: str, message: str) -> str:
    """Run ``command`` over ssh; it must fail with exit 1, print nothing on stdout, and say
    ``error: MESSAGE...``; returns the whole of stderr."""
    result = server.ssh(command)
    assert (result.returncode, result.stdout) == (1, ""), (command, result)
    said = "".join(line for line in result.stderr.splitlines(True) if not line.startswith("Warn"))
    assert said.startswith(f"error: {message}"), (command, said)
    assert len(said.splitlines()) == 1, said
    return said


def test_over_ssh_no_dokuenctl_command_reads_or_writes_a_server_path(
    dokuen: Dokuen, authorized: Sshd, tmp_path: Path
) -> None:
    dokuen.ctl("apps:create", "blog")
    source = write_app(tmp_path / "src", WEB)
    refused(
        authorized,
        f"dokuenctl deploy blog {source}",
        "deploy APP DIR is not available over ssh (it reads DIR on the server); deploy by "
        "git push: git push dokuen@HOST:APP main",
    )
    assert json.loads(dokuen.ctl("releases", "blog", "--json").stdout) == []

    dump = tmp_path / "written.dump"
    for asked in (f"-o {dump}", f"--output={dump}", f"--output {dump}"):
        refused(
            authorized,
            f"dokuenctl backups:download blog {asked}",
            "backups:download -o PATH over ssh would write a file on the server; the dump "
            "streams to stdout instead: ssh dokuen@HOST dokuenctl backups:download blog "
            "> blog.dump",
        )
    assert not dump.exists()
    assert list(tmp_path.glob("*.partial")) == []

    # A file of the server, read as the platform's account: its first word would come back
    # in the error (it is not a public key). Locally the same command shows it does.
    secret = tmp_path / "secret"
    secret.write_text("TOPSECRET-7f3a rest of it\n")
    local = dokuen.ctl("ssh-keys:add", "leak", str(secret), check=False)
    assert "TOPSECRET-7f3a" in local.stderr
    over_ssh = refused(
        authorized,
        f"dokuenctl ssh-keys:add leak {secret}",
        "ssh-keys:add over ssh reads the key from stdin, not a file on the server: "
        "ssh dokuen@HOST dokuenctl ssh-keys:add leak - < KEYFILE.pub",
    )
    assert "TOPSECRET" not in over_ssh
    assert [k["name"] for k in json.loads(dokuen.ctl("ssh-keys", "--json").stdout)] == [KEY]

    # dokuenctl's own options would point it at another socket or home.
    for asked in ("--home /tmp apps", "--socket /tmp/x.sock apps", "--socket=/tmp/x.sock apps"):
        refused(authorized, f"dokuenctl {asked}", "dokuenctl options before the command")

    # psql's \! (and \o |cmd, \copy ... program, -f, -o) would run as the platform's account.
    canary = tmp_path / "psql-canary"
    for asked in (
        f"dokuenctl pg:psql blog -c '\\! touch {canary}'",
        f"dokuenctl pg:psql blog -o {canary}",
        "dokuenctl pg:psql blog",
    ):
        refused(
            authorized,
            asked,
            "pg:psql is not available over ssh: psql's \\! and \\copy ... program would run "
            "commands on the server as the platform's account; run SQL as the app instead "
            '(dokuenctl run APP \'psql "$DATABASE_URL" -c "SELECT 1"\'), or pg:psql on the '
            "server itself",
        )
    assert not canary.exists()

    units = tmp_path / "units"
    refused(
        authorized,
        f"dokuenctl service:install --systemd --unit-dir {units}",
        "service:install is not available over ssh (run it on the server, as root)",
    )
    refused(authorized, "dokuenctl service:install --print", "service:install is not avail")
    refused(authorized, "dokuenctl service:uninstall", "service:uninstall is not available")
    assert not units.exists()
    refused(authorized, "dokuenctl git-post-receive", "dokuenctl git-post-receive is run by")

    refusals = [e["reason"] for e in daemon_events(dokuen, "ssh.refused")]
    assert any(r.startswith("deploy APP DIR is not available over ssh") for r in refusals)
    assert any(r.startswith("ssh-keys:add over ssh reads the key from stdin") for r in refusals)
    assert any(r.startswith("service:install is not available") for r in refusals)


def test_run_over_ssh_is_a_child_of_dokuend_not_of_the_ssh_session(
    dokuen: Dokuen, authorized: Sshd, tmp_path: Path
) -> None:
    dokuen.deploy("blog", write_app(tmp_path / "src", WEB))
    ancestors = 'p=$$; while [ "$p" -gt 1 ]; do echo "$p"; p=$(cut -d" " -f4 /proc/$p/stat); done'
    result = authorized.ssh(f"dokuenctl run blog {subprocess.list2cmdline([ancestors])}")
    assert result.returncode == 0, result.stderr
    assert dokuen.process is not None
    chain = [int(pid) for pid in result.stdout.split()]
    assert dokuen.process.pid in chain, (chain, dokuen.process.pid)
    sshd_pids = {int(p) for p in (authorized.log.parent / "sshd.pid").read_text().split()}
    assert not sshd_pids & set(chain)


def test_ssh_keys_add_reads_the_key_from_stdin_over_ssh_and_here(
    dokuen: Dokuen, authorized: Sshd, tmp_path: Path
) -> None:
    remote_key, local_key = keygen(tmp_path / "remote"), keygen(tmp_path / "local")
    added = authorized.ssh("dokuenctl ssh-keys:add remote -", stdin=remote_key.read_text())
    assert added.returncode == 0, added.stderr
    assert added.stdout == f"added ssh key remote (ssh-ed25519 {fingerprint(remote_key)})\n"
    added = ctl_with_stdin(dokuen, local_key.read_text(), "ssh-keys:add", "local", "-")
    assert added.returncode == 0, added.stderr
    assert added.stdout == f"added ssh key local (ssh-ed25519 {fingerprint(local_key)})\n"
    listed = json.loads(dokuen.ctl("ssh-keys", "--json").stdout)
    assert [(k["name"], k["fingerprint"]) for k in listed] == [
        (KEY, fingerprint(Path(f"{authorized.client_key}.pub"))),
        ("remote", fingerprint(remote_key)),
        ("local", fingerprint(local_key)),
    ]
    # The key added over ssh works.
    as_remote = replace(authorized, client_key=tmp_path / "remote")
    assert as_remote.ssh("dokuenctl apps").returncode == 0
