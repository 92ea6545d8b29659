"""One dokuend per home, and errors in one line: a second dokuend on the same home is refused
before it touches anything, and no ExceptionGroup or traceback ever reaches a user."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, Dokuen, free_port_block, get_json, wait_for, write_app
from tests.e2e.test_nginx import NGINX, env_via, http_port, nginx_dokuen

WEB = "web: python3 envserver.py\n"


def run_dokuend(env: dict[str, str], timeout: float = 15) -> subprocess.CompletedProcess[str]:
    """Run a dokuend that is expected to give up at once; its exit code and output."""
    return subprocess.run(
        [str(BIN / "dokuend")],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(stderr: str, expected: str) -> None:
    """stderr is one ``error:`` line holding ``expected`` besides the daemon's own JSON log
    lines; no traceback text anywhere."""
    assert "Traceback" not in stderr, stderr
    assert "ExceptionGroup" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("{")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert expected in lines[0], stderr


def home_snapshot(home: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under the home (nginx's logs aside) with its inode, size and mtime."""
    found = {}
    for path in home.rglob("*"):
        if "nginx/logs" in str(path) or "nginx/temp" in str(path):
            continue
        info = path.lstat()
        found[str(path.relative_to(home))] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return found


def fd_targets(pid: int) -> list[str]:
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return targets


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_a_second_dokuend_on_the_same_home_is_refused_and_changes_nothing(
    tmp_path: Path, apps_dir: Path
) -> None:
    with nginx_dokuen(tmp_path / "home") as first:
        assert first.process is not None
        port = http_port(first)
        first.deploy("blog", write_app(apps_dir / "blog", WEB))
        wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
        web = first.ps("blog")[0]
        nginx = json.loads(first.ctl("status", "--json").stdout)["nginx"]["pid"]
        before = home_snapshot(first.home)
        lock = first.home / "dokuend.lock"
        assert lock.read_text().strip() == str(first.process.pid)

        second = run_dokuend(first.env)
        assert second.returncode == 1
        assert_one_line_error(
            second.stderr, f"another dokuend (pid {first.process.pid}) runs on {first.home}"
        )
        assert home_snapshot(first.home) == before
        # The same with the socket gone: the lock, not the socket, says who runs here.
        socket = first.home / "dokuend.sock"
        socket.rename(tmp_path / "socket-aside")
        before = home_snapshot(first.home)
        third = run_dokuend(first.env)
        assert third.returncode == 1
        assert_one_line_error(third.stderr, f"another dokuend (pid {first.process.pid})")
        assert home_snapshot(first.home) == before  # no socket made, no nginx file written
        (tmp_path / "socket-aside").rename(socket)

        # The first one never noticed: same nginx master, same web process, same map.
        status = json.loads(first.ctl("status", "--json").stdout)
        assert status["pid"] == first.process.pid
        assert status["nginx"]["pid"] == nginx
        assert first.ps("blog")[0]["pid"] == web["pid"]
        assert env_via(port, "blog.localhost") is not None
        # No child holds the lock: it dies with dokuend, even by kill -9.
        for pid in (web["pid"], nginx):
            assert not [t for t in fd_targets(pid) if t.endswith("dokuend.lock")]
    # Gone with its holder: the next dokuend on the home starts (the file is still there).
    assert lock.exists()
    again = Dokuen(home=tmp_path / "home", ports=free_port_block())
    again.start()
    assert again.process is not None
    assert lock.read_text().strip() == str(again.process.pid)
    assert again.terminate() == 0


def test_a_socket_path_that_cannot_be_made_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    daemon = Dokuen(home=tmp_path / "home", ports=free_port_block())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    env = {**daemon.env, "DOKUEN_SOCKET": str(blocker / "dokuend.sock")}
    result = run_dokuend(env)
    assert result.returncode == 1
    # Raised inside the daemon's task group, so it reached main() as an ExceptionGroup.
    assert_one_line_error(result.stderr, f"cannot listen on {blocker / 'dokuend.sock'}")
    assert "(set DOKUEN_SOCKET to a path in a directory dokuend can write)" in result.stderr


def test_dokuenctl_reports_a_failed_system_call_in_one_line(dokuen: Dokuen, apps_dir: Path) -> None:
    dokuen.deploy("blog", write_app(apps_dir / "blog", WEB))
    web = wait_for(lambda: dokuen.running("blog", 1), "web.1")[0]
    # The app's state directory replaced by something no one can write into: the request
    # fails on the daemon's side with an OSError, which must come back as one line.
    formation = dokuen.home / "apps" / "blog" / "formation.json"
    formation.unlink(missing_ok=True)
    formation.mkdir()
    (formation / "keep").write_text("")
    result = dokuen.ctl("ps:scale", "blog", "web=2", check=False)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "formation.json")
    assert "internal error" not in result.stderr
    assert dokuen.ps("blog")[0]["pid"] == web["pid"]
    assert get_json(web["port"])["APP"] == "blog"
