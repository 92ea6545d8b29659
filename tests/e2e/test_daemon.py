"""The daemon itself: its socket, its settings, its log file and its slow readers."""

import contextlib
import json
import os
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import BIN, Dokuen, wait_for, write_app


def test_the_control_socket_is_private_and_status_answers(dokuen: Dokuen) -> None:
    mode = stat.S_IMODE(os.stat(dokuen.home / "dokuend.sock").st_mode)
    assert mode == 0o600
    status = json.loads(dokuen.ctl("status", "--json").stdout)
    assert status["apps"] == 0
    assert status["home"] == str(dokuen.home)
    assert dokuen.ctl("status").stdout.startswith(f"dokuend {status['version']} (pid ")


def test_the_daemon_logs_its_own_events_as_json_off_a_terminal(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    dokuen.deploy("blog", write_app(apps_dir / "blog", "web: exec sleep 1000\n"))
    wait_for(lambda: dokuen.running("blog", 1), "web.1")
    events = [json.loads(line) for line in dokuen.daemon_stderr().splitlines()]
    started = [e for e in events if e["event"] == "process.started"]
    assert started[0]["app"] == "blog"
    assert started[0]["proc"] == "web.1"
    assert isinstance(started[0]["pid"], int)


def test_sighup_rereads_the_settings_file_and_the_log_rotates_by_size(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    (dokuen.home / "dokuend.env").write_text("DOKUEN_LOG_MAX_BYTES=20000\nDOKUEN_LOG_KEEP=2\n")
    assert dokuen.process is not None
    dokuen.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "daemon.reloaded" in dokuen.daemon_stderr(), "the reload")
    writer = """
        import sys, time
        for i in range(3000):
            print(f"line {i:05d}", "z" * 60)
        sys.stdout.flush()
        time.sleep(1000)
    """
    dokuen.deploy("chatty", write_app(apps_dir / "chatty", "web: python3 w.py\n", {"w.py": writer}))
    logs = dokuen.home / "logs"
    wait_for((logs / "dokuen.log.2").exists, "two rotations")
    wait_for(lambda: "line 02999" in _read_all(logs), "the last line")
    names = sorted(p.name for p in logs.iterdir())
    assert names == ["dokuen.log", "dokuen.log.1", "dokuen.log.2"]  # keep 2: older ones went
    for name in ("dokuen.log.1", "dokuen.log.2"):
        assert 20000 <= (logs / name).stat().st_size < 20000 + 200  # one line past
    # Rotation happens between whole lines: every kept line is intact and in order.
    kept = "".join((logs / name).read_text() for name in reversed(names))
    numbers = [
        int(line.split("line ")[1][:5]) for line in kept.splitlines() if "chatty[web.1]" in line
    ]
    assert numbers == list(range(numbers[0], 3000))


def _read_all(directory: Path) -> str:
    """Every log file's text; a file rotated away while we look is simply skipped."""
    texts = []
    for path in directory.iterdir():
        try:
            texts.append(path.read_text())
        except FileNotFoundError:
            continue
    return "".join(texts)


def test_a_bad_settings_file_on_sighup_keeps_the_old_settings(dokuen: Dokuen) -> None:
    (dokuen.home / "dokuend.env").write_text("DOKUEN_NO_SUCH_THING=1\n")
    assert dokuen.process is not None
    dokuen.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "daemon.reload_failed" in dokuen.daemon_stderr(), "the failed reload")
    assert "unknown setting 'DOKUEN_NO_SUCH_THING'" in dokuen.daemon_stderr()
    assert dokuen.ctl("status").returncode == 0


def test_a_stuck_follower_is_dropped_and_never_slows_the_log(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    with subprocess.Popen(
        [str(BIN / "dokuenctl"), "logs", "-f", "-n", "0"],
        env=dokuen.env,
        stdout=subprocess.PIPE,
    ) as follower:
        wait_for(lambda: '"command": "logs"' in dokuen.daemon_stderr(), "the follower")
        follower.send_signal(signal.SIGSTOP)  # it reads nothing from now on
        try:
            writer = """
                import sys, time
                for i in range(300000):
                    print(f"line {i:06d}", "q" * 90)
                sys.stdout.flush()
                time.sleep(1000)
            """
            dokuen.deploy(
                "flood", write_app(apps_dir / "flood", "web: python3 w.py\n", {"w.py": writer})
            )
            wait_for(lambda: "line 299999" in dokuen.log(), "every line in the file", timeout=60)
        finally:
            follower.send_signal(signal.SIGCONT)
        assert follower.stdout is not None
        output = follower.stdout.read()
        assert follower.wait(10) == 0
    assert output.endswith(
        b"dokuen: this reader fell too far behind and was dropped; run 'dokuenctl logs -f' again\n"
    )
    assert sum(1 for line in dokuen.log().splitlines() if " flood[web.1]: " in line) == 300000


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/python3").exists(),
    reason="needs root (to act as another user) and a python3 that user can run",
)
def test_another_user_is_refused_by_its_credentials_not_just_the_file_mode(
    dokuen: Dokuen,
) -> None:
    # A socket in a directory others may enter, with a mode as if it were set wrong: the
    # credentials check must still refuse them.
    public = Path(tempfile.mkdtemp(prefix="dokuen-sock-"))
    public.chmod(0o755)
    socket_path = public / "dokuend.sock"
    dokuen.terminate()
    dokuen.extra_env["DOKUEN_SOCKET"] = str(socket_path)
    dokuen.start()
    socket_path.chmod(0o666)
    probe = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect(sys.argv[1])\n"
        's.sendall(b\'{"command": "status"}\\n\')\n'
        "print(s.makefile().readline(), end='')\n"
    )
    result = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            probe,
            str(socket_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "ok": False,
        "error": "user 65534 may not control this dokuend",
    }
    assert dokuen.ctl("status").returncode == 0  # its owner still may
    assert dokuen.terminate() == 0
    public.rmdir()  # the daemon removed its socket on the way out


def test_a_follower_that_leaves_is_forgotten_at_once(dokuen: Dokuen) -> None:
    assert dokuen.process is not None
    daemon = psutil.Process(dokuen.process.pid)
    before = len(daemon.net_connections(kind="unix"))
    dokuen.ctl("apps:create", "quiet")
    followers = [
        subprocess.Popen(
            [str(BIN / "dokuenctl"), "logs", "quiet", "-f"],
            env=dokuen.env,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(5)
    ]
    wait_for(lambda: len(daemon.net_connections(kind="unix")) >= before + 5, "five followers")
    for follower in followers:
        follower.kill()
        follower.wait()
    wait_for(lambda: len(daemon.net_connections(kind="unix")) <= before, "their sockets to close")


def test_an_orphan_that_exits_while_its_process_runs_is_reaped(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    """A worker leaves a background child behind (``(cmd &)``): orphaned, it becomes the
    daemon's (a subreaper's) child, and when it exits while the worker runs on, nothing
    of the worker's waits for it. The daemon reaps it at the SIGCHLD, so no zombie is
    left under it."""
    assert dokuen.process is not None
    daemon = psutil.Process(dokuen.process.pid)
    dokuen.deploy(
        "loop", write_app(apps_dir / "loop", "worker: (exec sleep 0.7 &); exec sleep 1000\n")
    )

    def orphans() -> list[psutil.Process]:
        found = []
        for child in daemon.children():
            with contextlib.suppress(psutil.Error):
                if child.cmdline() == ["sleep", "0.7"]:
                    found.append(child)
        return found

    [orphan] = wait_for(orphans, "the orphan adopted by the daemon")
    wait_for(lambda: not psutil.pid_exists(orphan.pid), "the orphan reaped", timeout=10)
    assert dokuen.running("loop", 1)
