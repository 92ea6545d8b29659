"""What a terminal shows of text an app controls, end to end: an app writes escape
sequences, a right-to-left override and rich markup into its log and its Procfile command;
``dokuenctl logs`` and ``ps`` on a real pty (and over ssh) print them as visible escapes,
literally, and never as the control sequences themselves."""

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
from pathlib import Path

from tests.e2e.conftest import BIN, Dokuen, wait_for, write_app
from tests.e2e.gitwork import Work
from tests.e2e.sshd import Sshd

# What the app writes (printf's octal escapes: ESC, BEL, and U+202E as UTF-8 bytes).
NASTY_PRINTF = (
    r"\033[5;31mblink\033[0m \033]0;pwned\007 \033[2J \342\200\256gnp.exe "
    r"[bold]x[/bold] [/bold] \302\233C1"
)
# Its command, as ps shows it: a shell comment holding the same, raw, in the Procfile.
NASTY_RAW = "\x1b[5;31mblink \x1b]0;pwned\x07 \u202egnp.exe [bold]x[/bold] [/bold] \x9bC1"
# Sequences the app sent that must never reach the terminal as they are.
RAW_SEQUENCES = ("\x1b[5;31m", "\x1b]0;", "\x1b[2J", "\u202e", "\x9b", "\x07")
# rich's own colours and styles (SGR): the only escape sequences it may print.
RICH_SGR = re.compile(r"\x1b\[[0-9;]*m")


def on_a_pty(dokuen: Dokuen, *args: str) -> str:
    """Run dokuenctl with stdin, stdout and stderr on a new pty (300 columns, a colour
    terminal); return what the terminal received."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 300, 0, 0))
    env = {**dokuen.env, "TERM": "xterm-256color", "COLUMNS": "300"}
    with subprocess.Popen(
        [str(BIN / "dokuenctl"), *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        start_new_session=True,
    ) as process:
        os.close(follower)
        received = b""
        while True:
            ready, _, _ = select.select([leader], [], [], 30)
            assert ready, f"dokuenctl {args} printed nothing for 30s"
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the pty's other side closed
                break
            if not chunk:
                break
            received += chunk
        assert process.wait(30) == 0, received
    os.close(leader)
    return received.decode()


def assert_shown_safely(shown: str) -> None:
    for sequence in RAW_SEQUENCES:
        assert sequence not in shown, (sequence, shown)
    assert "\x1b" not in RICH_SGR.sub("", shown), shown
    plain = RICH_SGR.sub("", shown)
    assert "\\x1b[5;31mblink" in plain
    assert "\\x1b]0;pwned\\x07" in plain
    assert "\\u202egnp.exe" in plain
    assert "\\x9bC1" in plain
    assert "[bold]x[/bold] [/bold]" in plain  # rich markup, printed as typed


def deploy_nasty(dokuen: Dokuen, tmp_path: Path) -> None:
    procfile = f"web: printf '{NASTY_PRINTF}\\n'; exec python3 envserver.py # {NASTY_RAW}\n"
    source = write_app(tmp_path / "src", "web: true\n")
    (source / "Procfile").write_text(procfile)
    dokuen.deploy("nasty", source)
    wait_for(lambda: "gnp.exe" in dokuen.log(), "the app's log line")


def test_logs_and_ps_on_a_terminal_show_what_an_app_wrote_as_visible_escapes(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    deploy_nasty(dokuen, tmp_path)
    logs = on_a_pty(dokuen, "logs", "nasty")
    assert_shown_safely(logs)
    assert "\x1b[" in logs  # rich still colours on a terminal: this is a terminal
    ps = on_a_pty(dokuen, "ps", "nasty")
    assert_shown_safely(ps)
    assert "web.1" in ps

    # Into a pipe, logs keeps the bytes as they were written, for the tools downstream.
    piped = dokuen.ctl("logs", "nasty").stdout
    assert "\x1b[5;31mblink\x1b[0m \x1b]0;pwned\x07" in piped
    assert "\u202egnp.exe [bold]x[/bold] [/bold]" in piped
    # Tables are for people (--json is for programs): made safe into a pipe too.
    (row,) = [line for line in dokuen.ctl("ps", "nasty").stdout.splitlines() if "web.1" in line]
    assert "\x1b" not in row
    assert "\\x1b[5;31mblink" in row
    assert NASTY_RAW in dokuen.ps("nasty")[0]["command"]


def test_over_ssh_logs_ps_and_errors_are_made_safe_for_the_client_terminal(
    dokuen: Dokuen, authorized: Sshd, tmp_path: Path
) -> None:
    deploy_nasty(dokuen, tmp_path)
    for command in ("dokuenctl logs nasty", "dokuenctl ps nasty", "dokuenctl config nasty"):
        result = authorized.ssh(command)
        assert result.returncode == 0, result.stderr
        for sequence in RAW_SEQUENCES:
            assert sequence not in result.stdout, (command, sequence)
    dokuen.ctl("config:set", "nasty", f"GREETING=\x1b]0;pwned\x07{NASTY_RAW}")
    config = authorized.ssh("dokuenctl config:get nasty GREETING")
    assert config.stdout.startswith("\\x1b]0;pwned\\x07\\x1b[5;31mblink")
    assert "\x1b" not in config.stdout


def test_build_output_reaches_the_pusher_as_visible_escapes(dokuen: Dokuen, tmp_path: Path) -> None:
    """git (2.39 here) passes a hook's control characters through to the pusher's terminal
    as they are: the hook makes them safe itself, whatever its stdout is."""
    dokuen.ctl("apps:create", "nasty")
    dokuen.ctl("config:set", "nasty", f"DEPLOY_BRANCH=main{NASTY_RAW}")
    release = f"release: printf '{NASTY_PRINTF}\\n'\nweb: python3 envserver.py\n"
    work = Work.create(tmp_path / "nasty", release)
    push = work.push(str(dokuen.home / "apps" / "nasty" / "repo.git"), "main")
    assert push.returncode == 0, push.stderr
    assert "only main\\x1b[5;31mblink" in push.stderr  # the note names DEPLOY_BRANCH
    dokuen.ctl("config:unset", "nasty", "DEPLOY_BRANCH")
    work.commit("again", {"VERSION": "2\n"})
    push = work.push(str(dokuen.home / "apps" / "nasty" / "repo.git"), "main")
    assert push.returncode == 0, push.stderr
    assert "remote: -----> Released v1" in push.stderr
    for sequence in RAW_SEQUENCES:
        assert sequence not in push.stderr, sequence
    assert "\\x1b]0;pwned\\x07" in push.stderr
    assert "[bold]x[/bold] [/bold]" in push.stderr
