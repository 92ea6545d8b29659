"""``dokuenctl run`` as ``heroku run`` works, end to end: attached through a real terminal
(raw mode, window size, Ctrl-C, Ctrl-D, the exit code), stdin as a pipe, a requester that
vanishes, ``run:detached``, and the protocol's older and broken clients."""

import base64
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import termios
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import (
    BIN,
    Dokuen,
    leftover_processes,
    running_dokuen,
    wait_for,
    write_app,
)
from tests.e2e.sshd import Sshd, keygen, running_sshd
from tests.e2e.terminal import Terminal
from tests.e2e.test_users import start

WEB = "web: python3 envserver.py\n"


@pytest.fixture
def blog(dokuen: Dokuen, apps_dir: Path) -> Dokuen:
    dokuen.deploy("blog", write_app(apps_dir / "blog", WEB))
    return dokuen


@pytest.fixture(scope="module")
def shared_blog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dokuen]:
    """One dokuend serving 'blog' for the tests whose one-off runs look at nothing but
    themselves (no run.N number, no app state): they need not each start their own."""
    with running_dokuen(tmp_path_factory.mktemp("run") / "home") as daemon:
        daemon.deploy("blog", write_app(daemon.home.parent / "src" / "blog", WEB))
        yield daemon


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def open_terminal(dokuen: Dokuen, opened: list[Terminal], *args: str) -> Terminal:
    env = {**dokuen.env, "TERM": "xterm-256color"}
    terminal = Terminal([str(BIN / "dokuenctl"), *args], env)
    opened.append(terminal)
    return terminal


def cooked(terminal: Terminal) -> bool:
    """The terminal is as a shell left it: line editing and echo on (not raw)."""
    modes = terminal.local_modes()
    return bool(modes & termios.ICANON and modes & termios.ECHO and modes & termios.ISIG)


def run_with_stdin(dokuen: Dokuen, stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(BIN / "dokuenctl"), "run", "blog", *args],
        input=stdin,
        env=dokuen.env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_an_interactive_shell_through_a_real_terminal(
    blog: Dokuen, terminals: list[Terminal]
) -> None:
    shell = open_terminal(blog, terminals, "run", "blog", "bash", "--norc", "--noprofile")
    shell.type(b"PS1='$ '; echo $((6*7)) $TERM $DYNO\r")
    assert b"42 xterm-256color run.1" in shell.expect(b"run.1\r\n")
    # The process's terminal is a pty it controls: tty names it, job control is on.
    shell.type(b"echo tty-$(tty | cut -c1-9); [[ $- == *m* ]] && echo job-control-$((1+1))\r")
    shell.expect(b"tty-/dev/pts/")
    shell.expect(b"job-control-2\r\n")
    # A window size change reaches it (TIOCSWINSZ + SIGWINCH on our side).
    shell.resize(33, 111)
    shell.type(b"stty size\r")
    shell.expect(b"33 111\r\n", timeout=10)
    # Ctrl-C goes to the process through its pty: the sleep ends, the session does not.
    marker = f"sleep 10{os.getpid() % 1000 + 3000}"
    shell.type(f"{marker}; echo slept\r".encode())
    wait_for(lambda: leftover_processes(marker), "the sleep to start")
    shell.type(b"\x03")
    shell.type(b"echo after-$((1+1))\r")
    shell.expect(b"after-2\r\n")
    assert b"slept" not in shell.seen
    assert not leftover_processes(marker)
    shell.type(b"exit 3\r")
    assert shell.wait() == 3
    assert cooked(shell)  # raw mode was undone
    assert "blog[dokuen]: run.1 exited with code 3" in blog.log()


def test_ctrl_d_ends_a_python_repl_and_the_exit_code_is_its(
    shared_blog: Dokuen, terminals: list[Terminal]
) -> None:
    repl = open_terminal(shared_blog, terminals, "run", "blog", "python3")
    repl.expect(b">>> ")
    repl.type(b"print(6 * 7)\r")
    repl.expect(b"42\r\n")
    # Only at the next prompt: readline sets its terminal up with a flush of what was typed.
    repl.expect(b">>> ")
    repl.type(b"\x04")
    assert repl.wait() == 0
    assert cooked(repl)


def test_the_terminal_is_restored_after_an_error_and_a_signal(
    shared_blog: Dokuen, terminals: list[Terminal]
) -> None:
    missing = open_terminal(shared_blog, terminals, "run", "nope", "bash")
    missing.expect(b"error: no app named 'nope'")
    assert missing.wait() == 1
    assert cooked(missing)
    marker = f"sleep 5{os.getpid() % 1000 + 3000}"
    shell = open_terminal(shared_blog, terminals, "run", "blog", marker)
    wait_for(lambda: leftover_processes(marker), "the one-off process")
    os.kill(shell.pid, signal.SIGTERM)
    assert shell.wait() == 128 + signal.SIGTERM
    assert cooked(shell)
    wait_for(lambda: not leftover_processes(marker), "the process to go with its requester")


def test_stdin_is_a_pipe_without_a_terminal(shared_blog: Dokuen) -> None:
    echoed = run_with_stdin(shared_blog, b"x\n", "cat")
    assert (echoed.returncode, echoed.stdout) == (0, b"x\n")
    # A MiB of every byte value, both ways, intact: output is not text.
    data = os.urandom(1 << 20)
    copied = run_with_stdin(shared_blog, data, "cat")
    assert copied.returncode == 0
    assert copied.stdout == data
    # stdin is closed at its end: cat returns, the command goes on; and its exit code.
    rest = run_with_stdin(shared_blog, b"a", "cat; echo ' and done'; [ -t 0 ] || exit 4")
    assert (rest.returncode, rest.stdout) == (4, b"a and done\n")
    # --no-tty: pipes even on a terminal; `--no-tty` after APP belongs to the command.
    assert run_with_stdin(shared_blog, b"", "echo", "--no-tty").stdout == b"--no-tty\n"


def test_no_tty_on_a_terminal_gives_pipes(shared_blog: Dokuen, terminals: list[Terminal]) -> None:
    piped = open_terminal(
        shared_blog, terminals, "run", "--no-tty", "blog", "[ -t 0 ] || echo piped"
    )
    piped.expect(b"piped")
    assert piped.wait() == 0


@pytest.mark.parametrize("with_terminal", [True, False], ids=["terminal", "pipes"])
def test_a_requester_killed_with_sigkill_leaves_nothing_behind(
    shared_blog: Dokuen, terminals: list[Terminal], with_terminal: bool
) -> None:
    marker = f"sleep 6{os.getpid() % 1000 + 3000}"
    command = f"{marker} & {marker}"  # a group of two, and the shell that waits

    def sleeps() -> int:
        return sum(p.name() == "sleep" for p in leftover_processes(marker))

    if with_terminal:
        client = open_terminal(shared_blog, terminals, "run", "blog", command)
        wait_for(lambda: sleeps() == 2, "both sleeps")
        os.kill(client.pid, signal.SIGKILL)
    else:
        argv = [str(BIN / "dokuenctl"), "run", "blog", command]
        with subprocess.Popen(argv, env=shared_blog.env, stdin=subprocess.PIPE) as piped:
            wait_for(lambda: sleeps() == 2, "both sleeps")
            piped.kill()  # its stdin still open: only the hang-up tells the daemon
    wait_for(lambda: not leftover_processes(marker), "the whole process group to go")


def _request(
    dokuen: Dokuen, message: dict[str, object], then: bytes = b""
) -> list[dict[str, object]]:
    """Send one raw request (and ``then``) on the control socket; every reply line."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(30)
        client.connect(str(dokuen.home / "dokuend.sock"))
        client.sendall(json.dumps(message).encode() + b"\n" + then)
        replies = b""
        while chunk := client.recv(65536):
            replies += chunk
            if b'"ok"' in replies:
                break
    return [json.loads(line) for line in replies.splitlines()]


def test_an_older_client_gets_text_and_a_broken_one_an_error(shared_blog: Dokuen) -> None:
    # No "attach": output as text, stdin /dev/null, exactly as before this protocol.
    old = _request(shared_blog, {"command": "run", "args": {"app": "blog", "line": "echo hi; cat"}})
    assert old == [{"output": "hi\n"}, {"ok": True, "result": {"status": 0}}]
    # Attached, sent in one write with the request: stdin, eof, nothing is lost.
    stdin = json.dumps({"stdin": base64.b64encode(b"early\n").decode()}).encode() + b"\n"
    attached = _request(
        shared_blog,
        {"command": "run", "args": {"app": "blog", "line": "cat", "attach": True}},
        stdin + b'{"eof": true}\n',
    )
    data = b"".join(base64.b64decode(str(m["data"])) for m in attached if "data" in m)
    assert (data, attached[-1]) == (b"early\n", {"ok": True, "result": {"status": 0}})
    marker = f"sleep 7{os.getpid() % 1000 + 3000}"
    for junk, error in [
        (b'{"stdin": "not base64!"}\n', "'stdin' must be base64 text"),
        (b'{"shell": "rm -rf /"}\n', "unknown message ['shell']"),
        (b"[1]\n", "a message after the request must be one JSON object"),
        (b'{"resize": [1, -1]}\n', "a window size must be [rows, cols]"),
    ]:
        broken = _request(
            shared_blog,
            {"command": "run", "args": {"app": "blog", "line": marker, "attach": True}},
            junk,
        )
        assert broken[-1]["ok"] is False
        assert error in str(broken[-1]["error"])
        assert not leftover_processes(marker)
    bad_tty = {"app": "blog", "line": "true", "attach": True, "tty": {"size": [24, 80]}}
    refused = _request(shared_blog, {"command": "run", "args": bad_tty})
    assert refused[-1] == {
        "ok": False,
        "error": "'term' must be a terminal type like xterm-256color",
    }


def test_run_detached_logs_as_run_n_shows_in_ps_and_stops_with_the_app(blog: Dokuen) -> None:
    started = blog.ctl("run:detached", "blog", "echo from the background; sleep 300")
    assert started.stdout.splitlines() == [
        "Running echo from the background; sleep 300 on blog... up, run.1",
        "Run dokuenctl logs blog --ps run.1 to view the output.",
    ]
    wait_for(lambda: "blog[run.1]: from the background" in blog.log(), "its output in the log")
    (row,) = [r for r in blog.ps("blog") if r["name"] == "run.1"]
    assert (row["type"], row["index"], row["state"]) == ("run", 1, "running")
    assert row["memory"] > 0  # measured as the Procfile's processes are
    assert psutil_alive(row["pid"])
    assert blog.ctl("logs", "blog", "--ps", "run.1").stdout.count("from the background") == 1
    refused = blog.ctl("restart", "blog", "run.1", check=False)
    assert refused.returncode == 2  # a wrong request: a usage error
    assert "detached runs do not restart; stop one with: dokuenctl ps:stop blog run.1" in (
        refused.stderr
    )
    # A second one, which ps:stop ends; then `stop` ends the first with the app.
    blog.ctl("run:detached", "blog", "sleep", "301")
    stopped = blog.ctl("ps:stop", "blog", "run.2")
    assert stopped.stdout == "Stopping run.2 process on blog... done\n"
    assert [r["name"] for r in blog.ps("blog")] == ["web.1", "run.1"]
    blog.ctl("stop", "blog")
    assert blog.ps("blog") == []
    assert not psutil_alive(row["pid"])
    assert "blog[dokuen]: run.1 stopped (killed by SIGTERM)" in blog.log()
    gone = blog.ctl("ps:stop", "blog", "run.1", check=False)
    assert (gone.returncode, gone.stderr) == (1, "error: no detached run named 'run.1'\n")
    # One that runs when the app is destroyed goes with it.
    blog.ctl("start", "blog")
    blog.ctl("run:detached", "blog", "sleep", "302")
    (last,) = [r for r in blog.ps("blog") if r["name"] == "run.3"]
    blog.ctl("apps:destroy", "blog", "--confirm", "blog")
    assert not psutil_alive(last["pid"])


def test_a_detached_run_that_ends_leaves_ps_and_is_not_restarted(blog: Dokuen) -> None:
    blog.ctl("run:detached", "blog", "echo done; exit 2")
    wait_for(lambda: "blog[dokuen]: run.1 exited with code 2" in blog.log(), "the run to end")
    wait_for(lambda: [r["name"] for r in blog.ps("blog")] == ["web.1"], "run.1 to leave ps")
    assert blog.log().count("run.1 started") == 1
    # Its output is read by the intake as a Procfile process's is: a line written in two
    # pieces is one line, one over 64 KiB is cut into pieces that say so, and what is left
    # without a newline at the end is written too.
    blog.ctl(
        "run:detached",
        "blog",
        "printf 'one '; sleep 0.05; echo half; head -c 70000 /dev/zero | tr '\\0' y; echo;"
        " printf 'no newline'",
    )
    wait_for(lambda: "blog[dokuen]: run.2 exited with code 0" in blog.log(), "run.2 to end")
    said = [
        line.split("blog[run.2]: ", 1)[1] for line in blog.log().splitlines() if "[run.2]: " in line
    ]
    assert said[0] == "one half"
    assert said[1].startswith("yyy")
    assert said[1].endswith(" [line continues]")
    assert said[2].startswith("[continued] yyy")
    assert said[1:3] == [s for s in said if "y" * 100 in s]
    assert len(said[1]) + len(said[2]) - len(" [line continues]") - len("[continued] ") == 70000
    assert said[3:] == ["no newline"]
    bad = blog.ctl("run:detached", "nope", "true", check=False)
    assert bad.returncode == 1
    assert "no app named 'nope'" in bad.stderr
    web = blog.ctl("ps:stop", "blog", "web.1", check=False)
    assert web.returncode == 2
    assert "ps:stop stops detached runs (run.N); web.1 belongs to the formation" in web.stderr


def psutil_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def authorized(blog: Dokuen, tmp_path: Path) -> Iterator[Sshd]:
    """A real sshd reading dokuend's authorized_keys, with the client's key added."""
    keys = blog.home / ".ssh" / "authorized_keys"
    with running_sshd(tmp_path / "sshd", keys) as server:
        blog.ctl("ssh-keys:add", "dev@laptop", str(keygen(server.client_key)))
        yield server


def test_the_same_session_over_ssh_with_a_terminal(
    blog: Dokuen, authorized: Sshd, terminals: list[Terminal]
) -> None:
    """ssh -tt dokuen@HOST dokuenctl run APP bash: sshd's pty is dokuenctl's terminal."""
    ssh = str(Path(shutil.which("ssh") or "/usr/bin/ssh"))
    argv = [ssh, *authorized.ssh_argv[1:], "-tt", f"{authorized.user}@127.0.0.1"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm-256color"}
    shell = Terminal([*argv, "dokuenctl run blog bash --norc --noprofile"], env, 30, 100)
    terminals.append(shell)
    shell.type(b"PS1='$ '; echo $((6*7)) $TERM; stty size\r")
    shell.expect(b"42 xterm-256color\r\n")
    shell.expect(b"30 100\r\n")
    shell.resize(40, 120)  # ssh sends it on, sshd resizes its pty, dokuenctl follows

    def size_followed() -> bool:
        """The new size travels beside the typed keys (ssh's window-change, then
        dokuenctl's request to dokuend), so a `stty size` typed at once may still see the
        old one: ask again until the new one shows."""
        shell.type(b"stty size; echo asked-$((1+1))\r")
        return b"40 120\r\n" in shell.expect(b"asked-2\r\n")

    wait_for(size_followed, "the new terminal size inside the run")
    marker = f"sleep 11{os.getpid() % 1000 + 3000}"
    shell.type(f"{marker}\r".encode())
    wait_for(lambda: leftover_processes(marker), "the sleep to start")
    shell.type(b"\x03")
    wait_for(lambda: not leftover_processes(marker), "Ctrl-C to end the sleep")
    shell.type(b"echo still-$((2+2))\r")
    shell.expect(b"still-4\r\n")
    shell.type(b"exit 3\r")
    assert shell.wait() == 3


def test_a_key_scoped_to_another_app_cannot_attach_to_this_one(
    blog: Dokuen, authorized: Sshd, tmp_path: Path
) -> None:
    """The attached run does not go through Client.call: it must pass the scope check too."""
    other = keygen(tmp_path / "ci_key")
    blog.ctl("ssh-keys:add", "ci", str(other), "--app", "notes")
    scoped = dataclasses.replace(authorized, client_key=tmp_path / "ci_key")
    marker = f"canary{os.getpid()}"
    for asked in (
        f"dokuenctl run blog touch {marker}",
        f"dokuenctl run:detached blog touch {marker}",
    ):
        refused = scoped.ssh(asked)
        assert refused.returncode == 1, refused
        assert "ssh key 'ci' (apps: notes) may not" in refused.stderr
    stopped = scoped.ssh("dokuenctl ps:stop blog run.1")
    assert (stopped.returncode, "(apps: notes) may not" in stopped.stderr) == (1, True)
    assert not list(blog.home.rglob(marker))
    assert "blog[dokuen]: run.1 started" not in blog.log()
    # The admin key may, through the same forced command.
    assert authorized.ssh("dokuenctl run blog echo hi").stdout == "hi\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="apps run as their own uid only under root")
def test_with_app_uids_the_session_and_its_terminal_are_the_apps(
    terminals: list[Terminal],
) -> None:
    top = Path(tempfile.mkdtemp(prefix="dokuen-run-"))
    top.chmod(0o755)  # app users pass through to their releases
    daemon = start(top)
    try:
        daemon.deploy("blog", write_app(top / "src" / "blog", WEB))
        uid = json.loads((daemon.home / "apps" / "blog" / "identity").read_text())["uid"]
        assert uid != 0
        shell = open_terminal(daemon, terminals, "run", "blog", "bash", "--norc", "--noprofile")
        shell.type(b"echo uid-$(id -u)-$((4+4))\r")
        assert shell.expect(b"-8\r\n").endswith(f"uid-{uid}-8\r\n".encode())
        # Its pty is its own (login's rules: its uid, mode 0620), not root's.
        shell.type(b"stat -c %u-%a $(tty); echo done-$((5+5))\r")
        assert f"{uid}-620".encode() in shell.expect(b"done-10\r\n")
        shell.type(b"exit 0\r")
        assert shell.wait() == 0
    finally:
        daemon.terminate()
        shutil.rmtree(top)
