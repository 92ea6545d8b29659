"""Every app is its own user (docs/security.md "Users and files"), end to end: a real
dokuend as root in a home that others may pass through, real apps that try to reach what
is not theirs, and the modes of the tree they would have to get through."""

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from dokuen.tls.keystore import KeyStore
from tests.e2e.conftest import BIN, Dokuen, free_port_block, wait_for, write_app
from tests.e2e.ocibase import busybox, write_base
from tests.e2e.pebble import MiniCa
from tests.e2e.test_build import buildpack

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root runs apps as their users")

ISOLATED = {"DOKUEN_APP_UIDS": "auto", "DOKUEN_BUILD_UIDS": "home"}
WEB = "web: python3 envserver.py\n"
# What a process of an app tries, one line of output each: "ok PATH" or "denied PATH".
PROBE = """\
try() { if "$@" >/dev/null 2>&1; then echo "ok $*"; else echo "denied $*"; fi; }
"""


@pytest.fixture
def open_top() -> Iterator[Path]:
    """A directory app users can pass through (pytest's temporary directories are 0700)."""
    top = Path(tempfile.mkdtemp(prefix="dokuen-users-"))
    top.chmod(0o755)
    yield top
    shutil.rmtree(top)


def start(top: Path, name: str = "home") -> Dokuen:
    daemon = Dokuen(home=top / name, ports=free_port_block(), extra_env=dict(ISOLATED))
    daemon.start()
    return daemon


@pytest.fixture
def isolated(open_top: Path) -> Iterator[Dokuen]:
    daemon = start(open_top)
    yield daemon
    if daemon.process is not None:
        daemon.terminate()


def identity(daemon: Dokuen, app: str) -> dict[str, int]:
    data: dict[str, int] = json.loads((daemon.home / "apps" / app / "identity").read_text())
    return data


def process_uids(daemon: Dokuen, app: str) -> set[tuple[int, int]]:
    """(uid, gid) of each running process of the app."""
    rows = wait_for(lambda: daemon.running(app, 1), f"{app} running")
    found = set()
    for row in rows:
        process = psutil.Process(row["pid"])
        found.add((process.uids().real, process.gids().real))
    return found


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def run(daemon: Dokuen, app: str, script: str) -> str:
    return daemon.ctl("run", app, PROBE + script).stdout


def deploy_pair(daemon: Dokuen, top: Path) -> None:
    for app in ("alpha", "beta"):
        daemon.ctl("apps:create", app)
        daemon.ctl("config:set", app, f"SECRET=secret-of-{app}")
        source = write_app(
            top / "src" / app,
            WEB + 'release: echo "release as $(id -u):$(id -g) HOME=$HOME"; touch "$HOME/r"\n',
        )
        result = daemon.deploy(app, source)
        who = identity(daemon, app)
        assert f"release as {who['uid']}:{who['gid']} HOME={daemon.home}/apps/{app}/data" in (
            result.stdout
        )


def test_each_app_runs_as_its_own_user_and_reaches_nothing_of_another(
    isolated: Dokuen, open_top: Path
) -> None:
    deploy_pair(isolated, open_top)
    alpha, beta = identity(isolated, "alpha"), identity(isolated, "beta")
    assert process_uids(isolated, "alpha") == {(alpha["uid"], alpha["gid"])}
    assert process_uids(isolated, "beta") == {(beta["uid"], beta["gid"])}
    daemon_uid = psutil.Process(isolated.process.pid if isolated.process else 0).uids().real
    assert len({alpha["uid"], beta["uid"], alpha["build_uid"], beta["build_uid"]}) == 4
    assert not {alpha["uid"], beta["uid"]} & {0, daemon_uid}

    home = isolated.home
    other = home / "apps" / "beta"
    out = run(
        isolated,
        "alpha",
        f"""
        echo "id $(id -u) $(id -g) groups $(id -G) HOME=$HOME"
        try cat {other}/env/SECRET
        try ls {other}/env
        try ls {other}/releases/v1
        try cat {other}/releases/v1/Procfile
        try cat {other}/releases/v1.json
        try ls {other}/repo.git
        try cat {other}/repo.git/HEAD
        try ls {other}/data
        try ls {other}/cache
        try ls {other}
        try ls {home}/apps
        try ls {home}
        try cat {home}/logs/dokuen.log
        try cat {home}/apps/alpha/env/SECRET
        try cat {home}/apps/alpha/releases/v1.json
        try python3 -c "import socket; socket.socket(socket.AF_UNIX).connect('{home}/dokuend.sock')"
        try touch "$PWD/written-by-the-app"
        try touch "$HOME/kept"
        try cat "$HOME/r"
        """,
    )
    assert (
        f"id {alpha['uid']} {alpha['gid']} groups {alpha['gid']} HOME={home}/apps/alpha/data"
        in (out)
    )
    denied = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("denied ")]
    allowed = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("ok ")]
    assert allowed == [
        f"touch {home}/apps/alpha/releases/v1/written-by-the-app",
        f"touch {home}/apps/alpha/data/kept",
        f"cat {home}/apps/alpha/data/r",
    ], out
    assert len(denied) == 16, out
    assert "secret-of-beta" not in out
    assert (home / "apps/alpha/releases/v1/written-by-the-app").stat().st_uid == alpha["uid"]
    # Past the socket's mode (as if someone opened it up), dokuend itself still refuses.
    socket_file = home / "dokuend.sock"
    socket_file.chmod(0o666)
    try:
        reply = run(
            isolated,
            "alpha",
            'python3 -c "import socket; s = socket.socket(socket.AF_UNIX); '
            f"s.connect('{socket_file}'); s.sendall(b'{{\\\"command\\\": \\\"status\\\"}}\\n'); "
            'print(s.makefile().readline())"',
        )
    finally:
        socket_file.chmod(0o600)
    assert json.loads(reply) == {
        "ok": False,
        "error": f"user {alpha['uid']} may not control this dokuend",
    }


def test_the_tree_has_its_owners_and_modes_after_create_and_deploy(
    isolated: Dokuen, open_top: Path
) -> None:
    home = isolated.home
    isolated.ctl("apps:create", "blog")
    app = home / "apps" / "blog"
    who = identity(isolated, "blog")
    assert mode(home) == mode(home / "apps") == mode(app) == 0o711
    assert app.stat().st_gid == who["gid"]
    assert (mode(app / "env"), (app / "env").stat().st_uid) == (0o700, 0)
    assert (mode(app / "data"), (app / "data").stat().st_uid) == (0o700, who["uid"])
    assert (app / "data").stat().st_gid == who["gid"]
    assert (mode(app / "cache"), (app / "cache").stat().st_uid) == (0o700, who["build_uid"])
    assert (mode(app / "repo.git"), (app / "repo.git").stat().st_uid) == (0o700, 0)
    assert mode(app / "releases") == 0o711
    assert mode(app / "identity") == 0o600
    assert mode(home / "logs") == 0o750
    assert mode(home / "logs" / "dokuen.log") == 0o640
    assert mode(home / "dokuend.sock") in (0o600, 0o660)
    isolated.ctl("config:set", "blog", "SECRET=x")
    isolated.deploy("blog", write_app(open_top / "src", WEB))
    release = app / "releases" / "v1"
    assert (mode(release), release.stat().st_uid, release.stat().st_gid) == (
        0o700,
        who["uid"],
        who["gid"],
    )
    assert (release / "envserver.py").stat().st_uid == who["uid"]
    assert mode(app / "releases" / "v1.json") == mode(app / "releases" / "v1.log") == 0o600
    assert mode(app / "formation.json") == mode(app / "env" / "SECRET") == 0o600
    # A Procfile-only build starts no process: no workspace to make for one.
    assert not (app / "build").exists()
    assert (app / "cache").stat().st_uid == who["build_uid"]
    # Nothing directly in the app's directory is readable by others.
    for path in app.iterdir():
        if not path.is_symlink():
            assert mode(path) & 0o004 == 0, path


def test_uids_survive_a_restart_and_a_recreated_app_is_a_new_user(
    isolated: Dokuen, open_top: Path
) -> None:
    isolated.deploy("blog", write_app(open_top / "src", WEB))
    before = identity(isolated, "blog")
    assert process_uids(isolated, "blog") == {(before["uid"], before["gid"])}
    isolated.terminate()
    isolated.start()
    assert identity(isolated, "blog") == before
    assert process_uids(isolated, "blog") == {(before["uid"], before["gid"])}
    status: dict[str, Any] = json.loads(isolated.ctl("status", "--json").stdout)
    assert status["isolation"]["apps"] == "uids"
    first, last = map(int, status["isolation"]["uids"].split("-"))
    assert first <= before["uid"] < before["build_uid"] <= last
    assert "each app runs as its own uid" in isolated.ctl("status").stdout

    isolated.ctl("apps:destroy", "blog", "--confirm", "blog")
    isolated.deploy("blog", write_app(open_top / "src", WEB))
    after = identity(isolated, "blog")
    assert after["uid"] not in (before["uid"], before["build_uid"])
    assert after["build_uid"] not in (before["uid"], before["build_uid"])
    assert process_uids(isolated, "blog") == {(after["uid"], after["gid"])}


def test_two_homes_get_different_uid_blocks(isolated: Dokuen, open_top: Path) -> None:
    second = start(open_top, "second")
    try:
        ranges = [
            json.loads(daemon.ctl("status", "--json").stdout)["isolation"]["uids"]
            for daemon in (isolated, second)
        ]
        assert ranges[0] != ranges[1]
        for daemon in (isolated, second):
            index = (daemon.home / "uid-block").read_text().strip()
            holder = Path("/var/lib/dokuen-uid-blocks") / index
            assert holder.read_text() == f"{daemon.home}\n"
        isolated.ctl("apps:create", "blog")
        second.ctl("apps:create", "blog")
        assert identity(isolated, "blog")["uid"] != identity(second, "blog")["uid"]
    finally:
        second.terminate()


def test_a_home_app_users_cannot_reach_is_refused_with_the_fix(tmp_path: Path) -> None:
    daemon = Dokuen(home=tmp_path / "home", ports=free_port_block(), extra_env=dict(ISOLATED))
    result = subprocess.run(
        [str(BIN / "dokuend")],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert f"error: apps run as their own users but cannot reach DOKUEN_HOME {daemon.home}" in (
        result.stderr
    )
    assert "(chmod o+x /tmp/pytest-of-root, or set DOKUEN_APP_UIDS=off" in result.stderr


def test_with_app_uids_off_apps_run_as_root_and_status_says_why(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    status = json.loads(dokuen.ctl("status", "--json").stdout)
    assert status["isolation"] == {
        "apps": "off",
        "reason": "DOKUEN_APP_UIDS=off: every app runs as root",
        "uids": None,
    }
    assert "isolation  off (DOKUEN_APP_UIDS=off" in dokuen.ctl("status").stdout
    # The probe of the test above does see through when nothing stops it.
    dokuen.deploy("alpha", write_app(apps_dir / "alpha", WEB))
    dokuen.ctl("apps:create", "beta")
    dokuen.ctl("config:set", "beta", "SECRET=secret-of-beta")
    out = run(dokuen, "alpha", f"try cat {dokuen.home}/apps/beta/env/SECRET; id -u")
    assert out == f"ok cat {dokuen.home}/apps/beta/env/SECRET\n0\n"


def test_an_app_of_an_older_dokuend_is_brought_up_to_date_at_start(open_top: Path) -> None:
    old = {"DOKUEN_APP_UIDS": "off", "DOKUEN_BUILD_UIDS": "off"}
    daemon = Dokuen(home=open_top / "home", ports=free_port_block(), extra_env=old)
    daemon.start()
    daemon.deploy("blog", write_app(open_top / "src", WEB))
    daemon.terminate()
    app = daemon.home / "apps" / "blog"
    # As Dokuen 0.1 left it: everything root's and readable, no identity, no data dir.
    assert not (app / "identity").exists()
    shutil.rmtree(app / "data")
    for path in (daemon.home, app, app / "releases", app / "releases" / "v1", app / "repo.git"):
        path.chmod(0o755)
    (app / "formation.json").chmod(0o644)
    # And a link where a file of the app's belongs: it must not be followed.
    bystander = open_top / "bystander"
    bystander.write_text("not dokuen's")
    bystander.chmod(0o644)
    (app / "last-build.log").unlink()
    (app / "last-build.log").symlink_to(bystander)

    daemon.extra_env.update(ISOLATED)
    daemon.start()
    try:
        who = identity(daemon, "blog")
        assert process_uids(daemon, "blog") == {(who["uid"], who["gid"])}
        release = app / "releases" / "v1"
        assert (release.stat().st_uid, mode(release)) == (who["uid"], 0o700)
        assert (release / "envserver.py").stat().st_uid == who["uid"]
        assert (app / "data").stat().st_uid == who["uid"]
        assert mode(daemon.home) == mode(app) == mode(app / "releases") == 0o711
        assert mode(app / "repo.git") == mode(app / "data") == 0o700
        assert mode(app / "formation.json") == 0o600
        assert (mode(bystander), bystander.stat().st_uid) == (0o644, 0)
        assert "last-build.log: left as it is" in daemon.daemon_stderr()
    finally:
        daemon.terminate()


def test_without_root_every_app_runs_as_the_caller_and_status_says_why(open_top: Path) -> None:
    nobody = 65534
    home = open_top / "home"
    home.mkdir()
    os.chown(home, nobody, nobody)
    daemon = Dokuen(
        home=home,
        ports=free_port_block(),
        extra_env={**ISOLATED, "DOKUEN_POSTGRES": "off"},
        launcher=("setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups"),
    )
    daemon.start()
    try:
        status = json.loads(daemon.ctl("status", "--json").stdout)
        assert status["isolation"] == {
            "apps": "off",
            "reason": f"dokuend runs as uid {nobody}, not root: every app runs as that user",
            "uids": None,
        }
        assert f"isolation  off (dokuend runs as uid {nobody}, not root" in (
            daemon.ctl("status").stdout
        )
        source = write_app(open_top / "src", WEB)
        for path in (source, *source.iterdir()):
            os.chown(path, nobody, nobody)
        daemon.deploy("blog", source)
        assert process_uids(daemon, "blog") == {(nobody, nobody)}
        assert not (home / "uid-block").exists()
        assert mode(home / "apps" / "blog" / "data") == 0o700
    finally:
        daemon.terminate()


@pytest.mark.skipif(shutil.which("psql") is None, reason="needs PostgreSQL's psql")
def test_an_app_reaches_its_own_database_socket_and_not_anothers(open_top: Path) -> None:
    port = free_port_block(1)[0]
    daemon = Dokuen(
        home=open_top / "home",
        ports=free_port_block(),
        extra_env={**ISOLATED, "DOKUEN_POSTGRES": "managed", "DOKUEN_POSTGRES_PORT": str(port)},
    )
    daemon.start()
    try:
        for app in ("alpha", "beta"):
            daemon.deploy(app, write_app(open_top / "src" / app, WEB))
            daemon.ctl("pg:create", app)
        alpha = identity(daemon, "alpha")
        beta_sockets = daemon.home / "apps" / "beta" / "run" / "postgresql"
        assert beta_sockets.parent.stat().st_gid == identity(daemon, "beta")["gid"]
        beta_url = daemon.ctl("config:get", "beta", "DATABASE_URL").stdout.strip()
        out = run(
            daemon,
            "alpha",
            f"""
            echo "me $(psql "$DATABASE_URL" -Atc 'SELECT current_user')"
            try ls {beta_sockets}
            try psql '{beta_url}' -Atc 'SELECT 1'
            """,
        )
        assert out.splitlines() == [
            "me app_alpha",
            f"denied ls {beta_sockets}",
            f"denied psql {beta_url} -Atc SELECT 1",
        ], out
        assert (daemon.home / "apps" / "alpha" / "run").stat().st_gid == alpha["gid"]
    finally:
        daemon.terminate()


def test_an_app_reaches_no_record_fifo_or_challenge_of_the_platform(
    isolated: Dokuen, open_top: Path
) -> None:
    """What crash adoption and HTTPS added to the home (records and FIFOs under run/, the
    ACME webroot, the tools builds run) is out of an app's reach: it can neither read nor
    forge a record, read another app's certificate key, write into another app's output
    FIFO, nor place a challenge file."""
    deploy_pair(isolated, open_top)
    home = isolated.home
    beta_pid = wait_for(lambda: isolated.running("beta", 1), "beta running")[0]["pid"]
    records = sorted((home / "run" / "processes").glob("beta.*.json"))
    fifos = [Path(os.readlink(f"/proc/{beta_pid}/fd/1"))]
    assert records
    assert fifos[0].parent == home / "run" / "fifo", fifos
    # The webroot as dokuend makes it for a real challenge (its own code, as root).
    keystore = KeyStore(home)
    challenge = keystore.put_challenge("real-token", "real-token.thumbprint").parent
    issued = MiniCa().issue(["beta.localhost"])
    key = keystore.install("beta", issued.cert, issued.key, "manual").key
    targets = {
        "ls": [home / "run", home / "run" / "processes", home / "run" / "fifo"],
        "cat": [records[0], key],
        "write": [
            records[0],
            home / "run" / "processes" / "beta.web.1.1.json",
            fifos[0],
            challenge / "forged-token",
            home / "acme" / "forged",
        ],
    }
    script = "\n".join(
        [f"try ls {path}" for path in targets["ls"]]
        + [f"try cat {path}" for path in targets["cat"]]
        + [f"try sh -c 'echo forged-line > {path}'" for path in targets["write"]]
    )
    out = run(isolated, "alpha", script)
    assert [line for line in out.splitlines() if line.startswith("ok ")] == [], out
    assert len([line for line in out.splitlines() if line.startswith("denied ")]) == 10, out
    assert issued.key.decode() not in out
    assert "forged-line" not in isolated.log()
    assert not (challenge / "forged-token").exists()
    assert (challenge / "real-token").read_text() == "real-token.thumbprint"
    assert not (home / "run" / "processes" / "beta.web.1.1.json").exists()


def test_a_later_build_cannot_change_an_earlier_release_through_a_hard_link(
    isolated: Dokuen, open_top: Path
) -> None:
    """A build (as the app's build uid) hard-links a file of its cache into the slug. Once
    built, the release is dokuend's: the next build, handed the cache again, must not be
    handed that inode too (it is v1's file as well), nor any other file linked from outside
    the tree it is given (/etc/shadow, on a host without fs.protected_hardlinks)."""
    pack = open_top / "linker"
    buildpack(
        pack,
        """\
        if [ -f "$2/shared" ]; then
          if echo tampered > "$2/shared" 2>/dev/null; then echo "-----> TAMPERED"
          else echo "-----> REFUSED"; fi
        else
          echo original > "$2/shared"
          ln "$2/shared" "$1/shared"
        fi
        """,
    )
    isolated.ctl("apps:create", "blog")
    isolated.ctl("config:set", "blog", f"BUILDPACK_URL={pack}")
    first = isolated.deploy("blog", write_app(open_top / "src1", WEB))
    v1 = isolated.home / "apps/blog/releases/v1/shared"
    assert v1.read_text() == "original\n", first.stdout
    second = isolated.deploy("blog", write_app(open_top / "src2", WEB, {"more.txt": "2"}))
    assert "REFUSED" in second.stdout, second.stdout
    assert v1.read_text() == "original\n"
    assert v1.stat().st_uid == 0
    image_refuses_a_file_the_app_may_not_read(isolated, open_top)


def image_refuses_a_file_the_app_may_not_read(daemon: Dokuen, top: Path) -> None:
    """`dokuenctl image` reads the release as root: a hard link the app made to a file it
    may not read (possible with fs.protected_hardlinks=0, planted here by the test as root)
    is refused by name, and its bytes go nowhere."""
    binary = busybox()
    if binary is None:
        return
    base = write_base(top / "base", binary)
    image = top / "blog.tar"
    daemon.ctl("image", "blog", "v2", "-o", str(image), "--base", str(base))
    assert image.stat().st_size > 0
    secret = top / "shadow"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    os.link(secret, daemon.home / "apps/blog/releases/v2/stolen")
    refused = daemon.ctl(
        "image", "blog", "v2", "-o", str(top / "no.tar"), "--base", str(base), check=False
    )
    assert refused.returncode == 1, refused
    assert refused.stderr.startswith("error: app/stolen: the app's user may not read it"), refused
    assert "Traceback" not in refused.stderr
    assert not (top / "no.tar").exists()


def test_a_push_learns_nothing_of_root_only_paths_through_its_buildpacks(
    isolated: Dokuen, open_top: Path
) -> None:
    """A push names its buildpacks (``.buildpacks``): a directory, or a git repository whose
    bin/compile links anywhere. Root does not look at them, the build's user does: a
    root-only path gives the same line whether it exists or not (root answered before)."""
    hidden = open_top / "root-only"
    hidden.mkdir(mode=0o700)
    source = write_app(open_top / "src", WEB)
    linked = buildpack(open_top / "linked", "true\n")
    (linked / "bin" / "compile").unlink()
    (linked / "bin" / "compile").symlink_to(hidden / "compile")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(linked)]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "pack"]):
        subprocess.run([*git, *command], check=True)
    isolated.ctl("apps:create", "blog")
    builder = identity(isolated, "blog")["build_uid"]  # git clones only a repo it owns
    for path in [linked, *linked.rglob("*")]:
        os.lchown(path, builder, builder)
    for named, expected in (
        (hidden / "pack", f"buildpack {hidden / 'pack'}: no such buildpack directory"),
        (f"file://{linked}", f"buildpack file://{linked}: it has no bin/compile"),
    ):
        said = []
        for exists in (True, False):
            if exists:
                buildpack(hidden / "pack", "true\n")
                (hidden / "compile").write_text("#!/bin/sh\n")  # not executable
            else:
                shutil.rmtree(hidden / "pack")
                (hidden / "compile").unlink()
            (source / ".buildpacks").write_text(f"{named}\n")
            result = isolated.ctl("deploy", "blog", str(source), check=False)
            assert result.returncode == 1, result.stdout
            said.append(result.stderr)
        assert said[0] == said[1], said
        assert expected in said[0], said[0]
    assert not (isolated.home / "apps" / "blog" / "releases" / "v1.json").exists()
