"""What an ssh key's forced command allows: a table of SSH_ORIGINAL_COMMANDs."""

import re

import pytest

from dokuen.errors import InvalidName, Refused
from dokuen.ssh.command import HIDDEN, Ctl, ReceivePack, parse_ssh_command


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ("git-receive-pack 'blog'", ReceivePack("blog")),  # git push dokuen@host:blog
        ("git-receive-pack '/blog'", ReceivePack("blog")),  # ssh://dokuen@host/blog
        ("git-receive-pack 'blog.git'", ReceivePack("blog")),
        ("git-receive-pack '/blog.git'", ReceivePack("blog")),
        ("git receive-pack 'blog'", ReceivePack("blog")),
        ("git-receive-pack blog", ReceivePack("blog")),
        ("dokuenctl apps", Ctl(("apps",))),
        ("dokuenctl", Ctl(())),
        ("dokuenctl --help", Ctl(("--help",))),
        (
            "dokuenctl config:set blog 'GREETING=hello world'",
            Ctl(("config:set", "blog", "GREETING=hello world")),
        ),
        ("dokuenctl run blog 'echo $HOME; id'", Ctl(("run", "blog", "echo $HOME; id"))),
    ],
)
def test_allowed(asked: str, expected: ReceivePack | Ctl) -> None:
    assert parse_ssh_command(asked) == expected


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        pytest.param("", "this ssh key cannot open a shell", id="shell"),
        pytest.param("   ", "this ssh key cannot open a shell", id="blank"),
        pytest.param("rm -rf /", "this ssh key cannot run 'rm -rf /'", id="rm"),
        pytest.param("bash -c 'id'", "this ssh key cannot run", id="bash"),
        pytest.param("git-upload-pack 'blog'", "this ssh key cannot fetch or clone", id="fetch"),
        pytest.param("git-upload-archive 'blog'", "cannot fetch or clone", id="archive"),
        pytest.param("git-receive-pack", "git-receive-pack takes exactly one", id="no-repo"),
        pytest.param("git-receive-pack a b", "git-receive-pack takes exactly one", id="two"),
        pytest.param("dokuenctl --socket /tmp/x apps", "dokuenctl options before", id="socket"),
        pytest.param("dokuenctl --home /etc apps", "dokuenctl options before", id="home"),
        pytest.param("dokuenctl git-hook", "dokuenctl git-hook is run by git", id="hook"),
        pytest.param("dokuenctl ssh-serve bob", "dokuenctl ssh-serve is run by", id="serve"),
        pytest.param("dokuenctl git-post-receive", "git-post-receive is run by", id="post"),
        pytest.param("dokuenctl --socket=/tmp/x apps", "dokuenctl options before", id="socket="),
        pytest.param("dokuenctl --home=/etc apps", "dokuenctl options before", id="home="),
        pytest.param("dokuenctl 'apps", "cannot read the command", id="unbalanced"),
        pytest.param("/usr/bin/dokuenctl apps", "this ssh key cannot run", id="abs-path"),
    ],
)
def test_refused(asked: str, message: str) -> None:
    with pytest.raises(Refused, match=re.escape(message)):
        parse_ssh_command(asked)


@pytest.mark.parametrize(
    "path", ["Blog", "my_app", "../blog", "apps/blog", "//blog", "", "blog/", "-x", "blog;id"]
)
def test_a_push_to_a_path_that_is_not_an_app_name_is_refused(path: str) -> None:
    with pytest.raises(InvalidName, match=r"^invalid app name "):
        parse_ssh_command(f"git-receive-pack '{path}'")


def test_every_hidden_dokuenctl_command_is_refused_to_ssh_keys() -> None:
    from dokuen.cli.dokuenctl import main  # noqa: PLC0415

    hidden = {name for name, command in main.commands.items() if command.hidden}
    assert hidden == HIDDEN


COMMANDS = ("apps", "logs", "config:set", "run", "git-hook", "ssh-serve", "git-post-receive")


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ("apps", Ctl(("apps",))),
        ("logs blog -t", Ctl(("logs", "blog", "-t"))),
        ("config:set blog K=V", Ctl(("config:set", "blog", "K=V"))),
        ("run blog 'echo $HOME'", Ctl(("run", "blog", "echo $HOME"))),
        ("dokuenctl apps", Ctl(("apps",))),  # the prefixed form still works
        ("git-receive-pack 'blog'", ReceivePack("blog")),  # and git push
    ],
)
def test_bare_dokuenctl_commands_as_dokku_and_piku_take_them(
    asked: str, expected: ReceivePack | Ctl
) -> None:
    assert parse_ssh_command(asked, COMMANDS) == expected


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ("git-hook", "dokuenctl git-hook is run by git"),
        ("ssh-serve bob", "dokuenctl ssh-serve is run by"),
        ("rm -rf /", "this ssh key cannot run 'rm -rf /'"),
        ("bash", "this ssh key cannot run 'bash'"),
    ],
)
def test_bare_commands_are_dokuenctls_and_no_others(asked: str, message: str) -> None:
    with pytest.raises(Refused, match=re.escape(message)):
        parse_ssh_command(asked, COMMANDS)
