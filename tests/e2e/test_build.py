"""Builds end to end: the installed dokuend runs real buildpacks (written by each test) in
isolated subprocesses, and only a complete build becomes a release."""

import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import textwrap
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    BIN,
    ENVSERVER,
    Dokuen,
    free_port_block,
    get_json,
    leftover_processes,
    wait_for,
    write_app,
)

pytestmark = pytest.mark.e2e


def buildpack(
    directory: Path, compile_: str, *, detect: str = "echo Test", release: str = ""
) -> Path:
    """Write a buildpack whose bin/ scripts run the given shell text."""
    scripts = {"detect": detect, "compile": compile_, "release": release or "echo '--- {}'"}
    (directory / "bin").mkdir(parents=True)
    for name, body in scripts.items():
        program = directory / "bin" / name
        program.write_text("#!/bin/sh\nset -e\n" + textwrap.dedent(body))
        program.chmod(0o755)
    return directory


def restarted(dokuen: Dokuen, **env: str) -> Dokuen:
    dokuen.terminate()
    dokuen.extra_env.update(env)
    dokuen.start()
    return dokuen


def web_app(directory: Path, **files: str) -> Path:
    return write_app(directory, "web: python3 envserver.py\n", files)


def test_a_build_sees_config_only_through_env_dir(dokuen: Dokuen, tmp_path: Path) -> None:
    pack = buildpack(
        tmp_path / "bp",
        """
        env > "$1/build-env"
        ls "$3" > "$1/env-dir"
        cat "$3/SECRET" > "$1/secret-from-env-dir"
        echo "-----> Compiled by the test buildpack"
        """,
    )
    dokuen.ctl("apps:create", "blog")
    dokuen.ctl("config:set", "blog", f"BUILDPACK_URL={pack}", "SECRET=s3cret")
    result = dokuen.deploy("blog", web_app(tmp_path / "src"))
    assert "-----> Compiled by the test buildpack" in result.stdout
    release = dokuen.home / "apps/blog/releases/v1"
    names = {line.split("=", 1)[0] for line in (release / "build-env").read_text().splitlines()}
    assert names <= {
        *("PATH", "HOME", "STACK", "SOURCE_VERSION", "DOKUEN_UV"),
        *("PWD", "SHLVL", "_", "OLDPWD"),
    }
    build_env = (release / "build-env").read_text()
    uv = next(line for line in build_env.splitlines() if line.startswith("DOKUEN_UV="))
    assert os.access(uv.removeprefix("DOKUEN_UV="), os.X_OK)  # the uv Python builds use
    assert "STACK=dokuen-1\n" in build_env
    assert f"HOME={dokuen.home}/apps/blog/build/home\n" in build_env
    assert "s3cret" not in build_env
    assert "CANARY_FROM_THE_DAEMON" not in build_env
    assert (release / "env-dir").read_text().split() == ["BUILDPACK_URL", "SECRET"]
    assert (release / "secret-from-env-dir").read_text() == "s3cret"
    # The config left with the build: ENV_DIR is not kept once the build is done.
    assert not (dokuen.home / "apps/blog/build/env").exists()


def test_buildpacks_run_in_order_and_their_results_reach_the_processes(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    first = buildpack(
        tmp_path / "first",
        """
        echo 'export FROM_FIRST=exported' > "$(dirname "$0")/../export"
        mkdir -p "$1/.profile.d"
        echo 'export FROM_PROFILE="set at start by .profile.d"' > "$1/.profile.d/first.sh"
        """,
        detect="echo First",
        release="""
        cat <<'YAML'
        ---
        config_vars:
          FROM_RELEASE: default
          SHADOWED: from-buildpack
        default_process_types:
          web: python3 envserver.py
          worker: exec sleep 1000
        YAML
        """,
    )
    second = buildpack(
        tmp_path / "second",
        'echo "-----> second sees FROM_FIRST=$FROM_FIRST"',
        detect="echo Second",
    )
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(ENVSERVER, source / "envserver.py")
    (source / ".buildpacks").write_text(f"{first}\n# a comment\n{second}\n")
    dokuen.ctl("apps:create", "blog")
    dokuen.ctl("config:set", "blog", "SHADOWED=from-config")
    result = dokuen.deploy("blog", source)
    assert "-----> second sees FROM_FIRST=exported" in result.stdout
    rows = wait_for(lambda: dokuen.running("blog", 2), "web and worker from bin/release")
    web = next(row for row in rows if row["name"] == "web.1")
    env = get_json(web["port"])
    assert env["FROM_PROFILE"] == "set at start by .profile.d"
    assert (env["FROM_RELEASE"], env["SHADOWED"]) == ("default", "from-config")
    (release,) = json.loads(dokuen.ctl("releases", "blog", "--json").stdout)
    assert release["buildpacks"] == ["First", "Second"]
    assert release["process_types"] == ["web", "worker"]


def test_failed_builds_change_nothing_that_serves(dokuen: Dokuen, tmp_path: Path) -> None:
    dokuen.deploy("blog", web_app(tmp_path / "good"))
    failing = buildpack(
        tmp_path / "failing", 'echo "compiling..."; echo " !     no way" >&2; exit 3'
    )
    unexecutable = buildpack(tmp_path / "unexecutable", "true")
    (unexecutable / "bin/compile").chmod(0o644)
    cases = {
        str(failing): "failed to compile the app (its bin/compile exited with code 3)",
        str(unexecutable): "bin/compile is not executable (chmod +x bin/compile",
        str(tmp_path / "nowhere"): "no such buildpack directory",
        "-oProxyCommand=touch /tmp/x": "is not a buildpack",
        f"file://{tmp_path}/no-such-repo.git": "cannot fetch buildpack",
    }
    for url, message in cases.items():
        dokuen.ctl("config:set", "blog", f"BUILDPACK_URL={url}")  # a release of v1's slug
        (serving,) = wait_for(lambda: dokuen.running("blog", 1), "v1's slug serving")
        result = dokuen.ctl("deploy", "blog", str(tmp_path / "good"), check=False)
        assert result.returncode == 1, url
        assert message in result.stderr, result.stderr
        assert [row["pid"] for row in dokuen.ps("blog")] == [serving["pid"]]
    failed = dokuen.ctl("deploy", "blog", str(tmp_path / "good"), check=False)
    assert " !     no way" not in failed.stdout  # the last attempt was the missing repo
    releases = json.loads(dokuen.ctl("releases", "blog", "--json").stdout)
    # Only the config changes made releases (the last 5 kept), all of them running v1's slug.
    assert [(r["version"], r["slug"]) for r in releases] == [
        (f"v{n}", "v1") for n in (6, 5, 4, 3, 2)
    ]
    assert sorted(p.name for p in (dokuen.home / "apps/blog/releases").iterdir()) == [
        "v1",
        "v1.pruned",
        *(f"v{n}.json" for n in (2, 3, 4, 5, 6)),
    ]
    assert "cannot fetch buildpack" in (dokuen.home / "apps/blog/last-build.log").read_text()


def test_a_buildpack_from_a_git_url_at_a_tag(dokuen: Dokuen, tmp_path: Path) -> None:
    pack = buildpack(tmp_path / "bp", 'echo "-----> built by the tagged buildpack"')
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(pack)]
    subprocess.run(["git", "init", "-q", str(pack)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "bp"], check=True)
    subprocess.run([*git, "tag", "v1"], check=True)
    dokuen.ctl("apps:create", "blog")
    dokuen.ctl("config:set", "blog", f"BUILDPACK_URL=file://{pack}#v1")
    result = dokuen.deploy("blog", web_app(tmp_path / "src"))
    assert f"-----> Fetching buildpack file://{pack}#v1" in result.stdout
    assert "-----> built by the tagged buildpack" in result.stdout


def test_a_build_past_its_time_limit_is_killed_with_its_whole_tree(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    restarted(dokuen, DOKUEN_BUILD_TIMEOUT="2")
    marker = f"98{os.getpid() % 1000:03d}7"
    pack = buildpack(
        tmp_path / "slow",
        f"""
        sleep {marker} &
        setsid sleep {marker} &
        echo "-----> compiling forever"
        sleep {marker}
        """,
    )
    dokuen.ctl("apps:create", "blog")
    dokuen.ctl("config:set", "blog", f"BUILDPACK_URL={pack}")
    result = dokuen.ctl("deploy", "blog", str(web_app(tmp_path / "src")), check=False)
    assert result.returncode == 1
    assert "-----> compiling forever" in result.stdout
    assert "longer than 2 s (DOKUEN_BUILD_TIMEOUT) and was killed" in result.stderr
    wait_for(lambda: not leftover_processes(f"sleep {marker}"), "the build's tree to be gone", 5)
    assert dokuen.ctl("releases", "blog", "--json").stdout.strip() == "[]"


def test_a_daemon_a_build_leaves_behind_is_killed(dokuen: Dokuen, tmp_path: Path) -> None:
    marker = f"97{os.getpid() % 1000:03d}3"
    # Double-forked: its parent is gone at once, so only the build's HOME still names it.
    # (The pause lets it leave the step's process group, which is killed when the step ends.)
    pack = buildpack(tmp_path / "leaky", f"(setsid sleep {marker} >/dev/null 2>&1 &); sleep 0.3")
    dokuen.ctl("apps:create", "blog")
    dokuen.ctl("config:set", "blog", f"BUILDPACK_URL={pack}")
    dokuen.deploy("blog", web_app(tmp_path / "src"))
    wait_for(lambda: not leftover_processes(f"sleep {marker}"), "the build's daemon to be gone", 5)


def test_a_build_that_fills_its_memory_limit_fails(dokuen: Dokuen, tmp_path: Path) -> None:
    restarted(dokuen, DOKUEN_BUILD_MEMORY="128")
    pack = buildpack(tmp_path / "hungry", "python3 -c 'bytearray(512 << 20)'")
    dokuen.ctl("apps:create", "blog")
    dokuen.ctl("config:set", "blog", f"BUILDPACK_URL={pack}")
    result = dokuen.ctl("deploy", "blog", str(web_app(tmp_path / "src")), check=False)
    assert result.returncode == 1
    assert "MemoryError" in result.stdout
    assert "failed to compile the app" in result.stderr


def test_two_builds_of_one_app_never_interleave(dokuen: Dokuen, tmp_path: Path) -> None:
    pack = buildpack(
        tmp_path / "bp", 'echo "start $$" >> "$2/trace"; sleep 0.5; echo "end $$" >> "$2/trace"'
    )
    dokuen.ctl("apps:create", "blog")
    dokuen.ctl("config:set", "blog", f"BUILDPACK_URL={pack}")
    source = web_app(tmp_path / "src")
    results: list[int] = []

    def deploy() -> None:
        results.append(dokuen.ctl("deploy", "blog", str(source), check=False).returncode)

    threads = [threading.Thread(target=deploy) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [0, 0]
    trace = (dokuen.home / "apps/blog/cache/trace").read_text().split("\n")
    words = [line.split()[0] for line in trace if line]
    assert words == ["start", "end", "start", "end"]
    assert [r["version"] for r in json.loads(dokuen.ctl("releases", "blog", "--json").stdout)] == [
        "v2",
        "v1",
    ]


def test_releases_record_their_build_and_pruned_ones_cannot_come_back(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    restarted(dokuen, DOKUEN_KEEP_RELEASES="2")
    source = web_app(tmp_path / "src")
    for _ in range(3):
        dokuen.deploy("blog", source)
    listing = json.loads(dokuen.ctl("releases", "blog", "--json").stdout)
    assert [(r["version"], r["current"]) for r in listing] == [("v3", True), ("v2", False)]
    assert listing[0]["buildpacks"] == ["Procfile"]
    log = (dokuen.home / "apps/blog/releases/v3.log").read_text()
    assert "-----> Building blog v3 from" in log
    assert dokuen.ctl("releases:output", "blog").stdout == log
    assert "-----> Building blog v2 from" in dokuen.ctl("releases:output", "blog", "v2").stdout
    gone = dokuen.ctl("releases:output", "blog", "v1", check=False)
    assert (gone.returncode, gone.stderr) == (1, "error: no release named 'v1'\n")
    result = dokuen.ctl("rollback", "blog", "v1", check=False)
    assert result.returncode == 1
    assert "v1 was pruned: only the last 2 releases are kept (DOKUEN_KEEP_RELEASES)" in (
        result.stderr
    )
    table = dokuen.ctl("releases", "blog").stdout.splitlines()
    header = ["RELEASE", "DESCRIPTION", "CREATED", "COMMIT", "BUILDPACKS", "TYPES"]
    assert table[0].split() == header
    assert table[1].split()[0] == "v3"
    assert table[1].split()[-1] == "current"


@pytest.fixture
def open_home() -> Iterator[Path]:
    """A DOKUEN_HOME the build user can reach (pytest's temporary directories are 0700)."""
    top = Path(tempfile.mkdtemp(prefix="dokuen-build-user-"))
    top.chmod(0o755)
    yield top
    shutil.rmtree(top)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root switches to a build user")
def test_as_root_each_app_builds_as_a_uid_of_its_own(open_home: Path) -> None:
    daemon = Dokuen(home=open_home / "home", ports=free_port_block())
    daemon.extra_env["DOKUEN_BUILD_UIDS"] = "2100001000-2100001009"
    daemon.start()
    marker = f"96{os.getpid() % 1000:03d}1"
    try:
        pack = buildpack(
            open_home / "bp",
            f"""
            echo "-----> building as uid $(id -u) gid $(id -g) groups $(id -G)"
            touch "$1/made"
            cat "{daemon.home}/apps/victim/env/SECRET" || echo "-----> no secret for me"
            setsid env HOME=/ sleep {marker} >/dev/null 2>&1 &
            """,
        )
        for app in ("victim", "spy"):
            daemon.ctl("apps:create", app)
            daemon.ctl("config:set", app, f"BUILDPACK_URL={pack}", "SECRET=hunter2")
        victim = daemon.deploy("victim", web_app(open_home / "src"))
        spy = daemon.deploy("spy", web_app(open_home / "src"))
        uid = 2100001000
        assert f"-----> building as uid {uid} gid {uid} groups {uid}" in victim.stdout
        assert f"-----> building as uid {uid + 1} gid {uid + 1} groups {uid + 1}" in spy.stdout
        assert "hunter2" not in victim.stdout + spy.stdout
        assert "-----> no secret for me" in spy.stdout
        # Handed back to root: no later build can change a release.
        assert (daemon.home / "apps/victim/releases/v1/made").stat().st_uid == 0
        assert (daemon.home / "apps/victim/cache").stat().st_uid == uid
        # The bundled buildpacks are used from a copy the builds can reach.
        assert (daemon.home / "buildpacks/procfile/bin/detect").stat().st_mode & 0o005 == 0o005
        env = daemon.home / "apps/victim/env"
        assert stat.S_IMODE(env.stat().st_mode) == 0o700
        assert stat.S_IMODE((env / "SECRET").stat().st_mode) == 0o600
        # Whatever a build started is gone with it, even with another HOME in a new session.
        assert not leftover_processes(f"sleep {marker}")
        wait_for(lambda: daemon.running("victim", 1), "the app built by its own uid")
        daemon.ctl("apps:destroy", "spy", "--confirm", "spy")
        assert sorted(p.name for p in (daemon.home / "build-uids").iterdir()) == [str(uid)]
    finally:
        daemon.terminate()


def test_a_python_app_with_a_requirement_builds_and_runs(dokuen: Dokuen, tmp_path: Path) -> None:
    source = web_app(tmp_path / "src", **{"requirements.txt": "six==1.17.0\n"})
    (source / "Procfile").write_text("web: python -c 'import six' && exec python envserver.py\n")
    result = dokuen.deploy("blog", source)
    assert "-----> Python app detected" in result.stdout
    (web,) = wait_for(lambda: dokuen.running("blog", 1), "the python app")
    env = get_json(web["port"])
    assert env["PATH"].startswith(f"{dokuen.home}/apps/blog/releases/v1/.venv/bin:")
    # A rebuild reuses the build cache: same result, no new download.
    again = dokuen.deploy("blog", source)
    assert "-----> Python app detected" in again.stdout
    wait_for(lambda: dokuen.running("blog", 1), "the rebuilt python app")


def test_a_static_site_needs_no_procfile(dokuen: Dokuen, tmp_path: Path) -> None:
    source = tmp_path / "site"
    source.mkdir()
    (source / "index.html").write_text("<h1>home page</h1>\n")
    (source / ".env").write_text("SECRET=hidden\n")
    result = dokuen.deploy("site", source)
    assert "-----> Static HTML app detected" in result.stdout
    (web,) = wait_for(lambda: dokuen.running("site", 1), "the static site")
    with urllib.request.urlopen(f"http://127.0.0.1:{web['port']}/", timeout=5) as page:
        assert page.read() == b"<h1>home page</h1>\n"
    with pytest.raises(urllib.error.HTTPError) as hidden:
        urllib.request.urlopen(f"http://127.0.0.1:{web['port']}/.env", timeout=5)
    hidden.value.close()
    assert hidden.value.code == 404


def slow_deploy(dokuen: Dokuen, tmp_path: Path, marker: str) -> subprocess.Popen[str]:
    """Start a deploy whose compile runs ``sleep MARKER``; return once the build is under way."""
    pack = buildpack(tmp_path / "slow", f'echo "-----> compiling"; sleep {marker}')
    dokuen.ctl("config:set", "blog", f"BUILDPACK_URL={pack}")
    wait_for(lambda: dokuen.running("blog", 1), "v2 (v1's slug) running with the config")
    deploy = subprocess.Popen(
        [str(BIN / "dokuenctl"), "deploy", "blog", str(web_app(tmp_path / "src2"))],
        env=dokuen.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: leftover_processes(f"sleep {marker}"), "the build to be under way")
    return deploy


def test_an_interrupted_deploy_never_goes_live(dokuen: Dokuen, tmp_path: Path) -> None:
    dokuen.deploy("blog", web_app(tmp_path / "src"))
    marker = f"95{os.getpid() % 1000:03d}1"
    deploy = slow_deploy(dokuen, tmp_path, marker)
    (serving,) = dokuen.ps("blog")
    deploy.send_signal(signal.SIGINT)  # as a pusher's Ctrl-C reaches the hook
    _, stderr = deploy.communicate(timeout=30)
    assert deploy.returncode == 130
    # One line that says what happened: no traceback, no "Aborted!", no cancel scopes.
    assert stderr.strip().splitlines() == [
        "interrupted: a deploy called off before its switch changes nothing "
        "(see: dokuenctl releases blog)"
    ]
    wait_for(lambda: not leftover_processes(f"sleep {marker}"), "the build to be killed", 10)
    wait_for(lambda: "called off before it went live" in dokuen.log(), "the deploy called off")
    listing = json.loads(dokuen.ctl("releases", "blog", "--json").stdout)
    assert [r["version"] for r in listing] == ["v2", "v1"]  # v2: the config change, no build
    assert [row["pid"] for row in dokuen.ps("blog")] == [serving["pid"]]


def test_destroying_an_app_calls_off_its_build(dokuen: Dokuen, tmp_path: Path) -> None:
    dokuen.deploy("blog", web_app(tmp_path / "src"))
    marker = f"95{os.getpid() % 1000:03d}2"
    deploy = slow_deploy(dokuen, tmp_path, marker)
    dokuen.ctl("apps:destroy", "blog", "--confirm", "blog")
    _, stderr = deploy.communicate(timeout=30)
    assert deploy.returncode == 1
    assert "error: the deploy of blog was called off before it went live" in stderr
    assert not leftover_processes(f"sleep {marker}")
    assert not (dokuen.home / "apps/blog").exists()
    dokuen.ctl("apps:create", "blog")  # the name is free again


def test_a_release_command_past_the_time_limit_is_killed(dokuen: Dokuen, tmp_path: Path) -> None:
    restarted(dokuen, DOKUEN_BUILD_TIMEOUT="2")
    marker = f"95{os.getpid() % 1000:03d}3"
    source = write_app(tmp_path / "src", f"web: python3 envserver.py\nrelease: sleep {marker}\n")
    result = dokuen.deploy_result("blog", source)
    assert result.returncode == 1
    assert "the release command of v1 took longer than 2 s (DOKUEN_BUILD_TIMEOUT)" in (
        result.stderr
    )
    assert not leftover_processes(f"sleep {marker}")
    assert dokuen.ctl("releases", "blog", "--json").stdout.strip() == "[]"
    assert dokuen.ps("blog") == []
