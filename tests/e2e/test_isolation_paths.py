"""dokuend never follows a link an app controls, and the port is the app's: the installed
dokuend, as root, refuses a Procfile or .env that links to /etc/shadow (in the source or
made by a build), and a process of another user that binds an app's PORT first gets none
of its traffic; the deploy fails its health check and the old release keeps serving."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Dokuen, free_port_block, wait_for, write_app
from tests.e2e.test_build import buildpack
from tests.e2e.test_nginx import NGINX, env_via, get, http_port, nginx_dokuen

pytestmark = pytest.mark.e2e
SHADOW = Path("/etc/shadow")
WEB = "web: python3 envserver.py\n"
NEEDS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0 or not SHADOW.exists(), reason="reading /etc/shadow needs root"
)


def shadow_lines() -> list[str]:
    """What must never come out: each line of /etc/shadow and each of its password fields
    that is more than a placeholder like '*' or '!'."""
    lines = [line for line in SHADOW.read_text().splitlines() if line.strip()]
    hashes = [line.split(":")[1] for line in lines if len(line.split(":")[1]) > 2]
    names = [f"{line.split(':')[0]}," for line in lines]  # "Process types -> root, daemon"
    return lines + hashes + names[1:]


def everything_shown(dokuen: Dokuen, *results: subprocess.CompletedProcess[str]) -> str:
    """All a user or an admin could read afterwards: the commands' output, the unified
    log, the daemon's own output, every build log and release record."""
    texts = [r.stdout + r.stderr for r in results]
    texts += [dokuen.log(), dokuen.daemon_stderr(), dokuen.ctl("ps", "--json").stdout]
    for path in (dokuen.home / "apps").rglob("*"):
        if path.suffix in (".log", ".json") and path.is_file() and not path.is_symlink():
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def assert_nothing_of_shadow(text: str) -> None:
    leaked = [secret for secret in shadow_lines() if secret in text]
    assert not leaked, f"{len(leaked)} piece(s) of /etc/shadow came out"


def releases(dokuen: Dokuen, app: str) -> list[str]:
    return [r["version"] for r in json.loads(dokuen.ctl("releases", app, "--json").stdout)]


def current(dokuen: Dokuen, app: str) -> str:
    rows = json.loads(dokuen.ctl("releases", app, "--json").stdout)
    return str(next(r["version"] for r in rows if r["current"]))


@NEEDS_ROOT
@pytest.mark.parametrize("name", ["Procfile", ".env", ".buildpacks"])
def test_a_source_file_that_links_to_etc_shadow_is_refused(
    dokuen: Dokuen, tmp_path: Path, name: str
) -> None:
    dokuen.deploy("blog", write_app(tmp_path / "good", WEB))
    (serving,) = wait_for(lambda: dokuen.running("blog", 1), "v1 serving")
    bad = write_app(tmp_path / "bad", WEB)
    (bad / name).unlink(missing_ok=True)
    (bad / name).symlink_to(SHADOW)
    result = dokuen.ctl("deploy", "blog", str(bad), check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{name} is a symbolic link (to /etc/shadow); commit the file itself" in result.stderr
    assert releases(dokuen, "blog") == ["v1"]
    assert [row["pid"] for row in dokuen.running("blog", 1) or []] == [serving["pid"]]
    assert_nothing_of_shadow(everything_shown(dokuen, result))


@NEEDS_ROOT
@pytest.mark.parametrize("name", ["Procfile", ".env"])
def test_a_build_that_turns_a_file_into_a_link_is_refused(
    dokuen: Dokuen, tmp_path: Path, name: str
) -> None:
    dokuen.deploy("blog", write_app(tmp_path / "good", WEB))
    (serving,) = wait_for(lambda: dokuen.running("blog", 1), "v1 serving")
    pack = buildpack(tmp_path / "linker", f'ln -sf {SHADOW} "$1/{name}"\n')
    dokuen.ctl("config:set", "blog", f"BUILDPACK_URL={pack}")  # v2: v1's slug, restarted
    (serving,) = wait_for(lambda: dokuen.running("blog", 1), "v2 serving")
    result = dokuen.ctl("deploy", "blog", str(tmp_path / "good"), check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{name} is a symbolic link (to /etc/shadow); commit the file itself" in result.stderr
    assert releases(dokuen, "blog") == ["v2", "v1"]
    assert [row["pid"] for row in dokuen.running("blog", 1) or []] == [serving["pid"]]
    assert not (dokuen.home / "apps/blog/releases/v3").exists()
    assert_nothing_of_shadow(everything_shown(dokuen, result))


def test_a_marker_file_linked_out_of_the_app_tells_a_push_nothing_of_its_target(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    """Choosing a bundled buildpack (as root, as data) looks at requirements.txt,
    package.json, index.html and the Procfile: one that links out of the app is refused in
    one line naming it and the fix, the same line whether the target exists or not (before,
    an existing target picked the buildpack and a missing one did not)."""
    dokuen.deploy("blog", write_app(tmp_path / "good", WEB))
    (serving,) = wait_for(lambda: dokuen.running("blog", 1), "v1 serving")
    hidden = tmp_path / "root-only"
    hidden.mkdir(mode=0o700)
    for name in ("requirements.txt", "package.json", "index.html", "Procfile"):
        bad = write_app(tmp_path / f"bad-{name}", WEB)
        (bad / name).unlink(missing_ok=True)
        (bad / name).symlink_to(hidden / name)
        said = []
        for exists in (True, False):
            if exists:
                (hidden / name).write_text("web: cat /etc/shadow\n")
            else:
                (hidden / name).unlink()
            result = dokuen.ctl("deploy", "blog", str(bad), check=False)
            assert result.returncode == 1, result.stdout + result.stderr
            said.append(result.stderr)
        assert said[0] == said[1], (name, said)
        assert said[0] == (
            f"error: {name} is a symbolic link (to {hidden / name}); commit the file itself\n"
        )
    assert releases(dokuen, "blog") == ["v1"]
    assert [row["pid"] for row in dokuen.running("blog", 1) or []] == [serving["pid"]]


# -- the port is the app's -------------------------------------------------------------

SQUATTER = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(sys.argv[2], "a") as seen:
            print(self.path, file=seen)
        body = b"squatted"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("listening", flush=True)
server.serve_forever()
"""


@contextlib.contextmanager
def squatting(port: int, seen: Path) -> Iterator[subprocess.Popen[str]]:
    """Another user (nobody) serving HTTP on 127.0.0.1:port; the paths it was asked for go
    to ``seen``."""
    seen.touch()
    seen.chmod(0o666)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    process = subprocess.Popen(
        [*nobody, sys.executable, "-c", SQUATTER, str(port), str(seen)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "listening\n"
        yield process
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_a_squatter_on_the_new_port_gets_no_traffic_and_the_deploy_fails(
    tmp_path: Path,
) -> None:
    first, _ = free_port_block(2)
    old_port, new_port = first, first + 1  # two ports: v1's web.1, then v2's
    with nginx_dokuen(tmp_path / "home", DOKUEN_PORT_RANGE=f"{old_port}-{new_port}") as daemon:
        http = http_port(daemon)
        daemon.deploy("blog", write_app(tmp_path / "v1", WEB))  # a normal deploy passes
        (row,) = wait_for(lambda: daemon.running("blog", 1), "v1 serving")
        assert row["port"] == old_port
        assert "answers a TCP connect on port" in daemon.log()
        # v2's web.1 binds its port only after a while: time for someone else to take it.
        slow = write_app(tmp_path / "v2", "web: sleep 3 && exec python3 envserver.py\n")
        deploy = subprocess.Popen(
            [str(Path(sys.executable).parent / "dokuenctl"), "deploy", "blog", str(slow)],
            env=daemon.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Beside v1 until it passes, so not in `ps` yet: the unified log says it started.
            wait_for(
                lambda: any(
                    "web.1 started, pid" in line and line.endswith(f"port {new_port}")
                    for line in daemon.log().splitlines()
                ),
                "v2's web.1 to start on the second port",
                timeout=60,
            )
            with squatting(new_port, tmp_path / "seen") as squatter:
                stdout, stderr = deploy.communicate(timeout=60)
                assert deploy.returncode == 1, stdout + stderr
                assert f"port {new_port} is held by pid {squatter.pid} (not web.1's)" in stderr
                assert "the old ones keep serving" in stderr
                # nginx sends everything to v1, never to the squatter.
                for index in range(20):
                    status, body = get(http, "blog.localhost", f"/user-request-{index}")
                    assert status == 200
                    assert json.loads(body)["PORT"] == str(old_port)
                assert "user-request" not in (tmp_path / "seen").read_text()
                conf = (daemon.home / "nginx/apps/blog.conf").read_text()
                assert f"127.0.0.1:{new_port}" not in conf
                assert f"127.0.0.1:{old_port}" in conf
        finally:
            if deploy.poll() is None:
                deploy.kill()
                deploy.communicate()
        assert current(daemon, "blog") == "v1"
        assert "failed its health check: port" in daemon.log()
        assert env_via(http, "blog.localhost") is not None
