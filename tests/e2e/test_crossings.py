"""An attacker who controls one app (what it pushes, what its processes do) or one ssh key
scoped to it tries to reach another app or the platform (docs/security.md). Each test is
one attempt, against real processes: it must fail, and the other app must not notice."""

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.e2e.conftest import Dokuen, free_port_block, get_json, wait_for, write_app
from tests.e2e.gitwork import Work, remote_lines
from tests.e2e.sshd import Sshd, keygen
from tests.e2e.test_git_push import WEB
from tests.e2e.test_users import (
    identity,
    open_top,  # noqa: F401 (a fixture)
    start,
)

CI_IS = "ssh key 'ci' (apps: blog)"


class Listener:
    """A TCP listener on 127.0.0.1 standing for what no key may reach (another app's
    port, the database): it counts every connection it is handed."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.sendall(b"the other app's secret\n")
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    served = Listener()
    yield served
    served.close()


def test_a_pushed_chain_of_links_cannot_make_dokuend_look_outside_the_tree(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    """``here -> .`` and ``requirements.txt -> here/here/.../../../<another app's config
    file>`` read as a link inside the tree, but the kernel climbs out. Before the fix the
    push passed the check and dokuend (root) looked through the link to choose a
    buildpack: "Python app detected" told whether another app had a config var of that
    name (and here, with builds as root, the build printed its value). Now the push is
    refused the same way whether the target exists or not."""
    dokuen.ctl("apps:create", "alpha")
    dokuen.ctl("config:set", "alpha", "SECRET_KEY=of-alpha")
    secret = dokuen.home / "apps" / "alpha" / "env" / "SECRET_KEY"
    assert secret.is_file()
    dokuen.ctl("apps:create", "beta")
    bare = str(dokuen.home / "apps" / "beta" / "repo.git")
    work = Work.create(tmp_path / "beta", WEB)
    first = work.push(bare, "main")
    assert first.returncode == 0, first.stderr
    depth = len(dokuen.home.parts) + 4
    (work.path / "here").symlink_to(".")
    for target in (secret, secret.with_name("NO_SUCH_KEY")):
        (work.path / "requirements.txt").unlink(missing_ok=True)
        climb = "/".join(["here"] * depth + [".."] * depth)
        (work.path / "requirements.txt").symlink_to(f"{climb}{target}")
        assert os.path.realpath(work.path / "requirements.txt") == str(target)
        commit = work.commit(f"probe {target.name}")
        push = work.push(bare, "main")
        assert push.returncode != 0, push.stderr
        assert (
            f"error: commit {commit[:7]} cannot be deployed: requirements.txt is a link out of "
            "the app's tree"
        ) in push.stderr, push.stderr
        assert "app detected" not in push.stderr
        assert "of-alpha" not in push.stderr
    releases = dokuen.ctl("releases", "beta").stdout
    assert "v1" in releases
    assert "v2" not in releases
    assert "of-alpha" not in dokuen.log()


def test_a_scoped_key_reaches_no_port_and_cannot_lift_its_apps_limits(
    dokuen: Dokuen, sshd: Sshd, listener: Listener, tmp_path: Path
) -> None:
    """A key for blog alone tries sshd's own ways around its forced command (local, stdio,
    dynamic and remote forwarding, a subsystem) towards a port on 127.0.0.1, and to lift
    the limits an admin holds blog in: by config:set, config:unset and a rollback to a
    release from before the limit."""
    keygen(tmp_path / "ci")
    dokuen.ctl("ssh-keys:add", "ci", str(tmp_path / "ci.pub"), "--app", "blog")
    ci = replace(sshd, client_key=tmp_path / "ci")
    host = f"{ci.user}@127.0.0.1"

    # A stdio forward (ssh -W) to the port: refused by sshd, nothing connects.
    stdio = subprocess.run(
        [*ci.ssh_argv, "-W", f"127.0.0.1:{listener.port}", host],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert stdio.returncode != 0
    assert "administratively prohibited" in stdio.stderr, stdio.stderr
    assert "secret" not in stdio.stdout

    # A remote forward (ssh -R): the server's side never listens.
    remote_spec = f"127.0.0.1:{free_port_block(1)[0]}:127.0.0.1:{listener.port}"
    remote = subprocess.run(
        [*ci.ssh_argv, "-N", "-o", "ExitOnForwardFailure=yes", "-R", remote_spec, host],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert remote.returncode != 0
    assert "remote port forwarding failed" in remote.stderr, remote.stderr

    # Local and dynamic forwards (ssh -N -L, -D): the client listens, sshd opens nothing.
    local_port, socks_port = free_port_block(2)
    local_spec = f"{local_port}:127.0.0.1:{listener.port}"
    forward = subprocess.Popen(
        [*ci.ssh_argv, "-N", "-L", local_spec, "-D", f"127.0.0.1:{socks_port}", host],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: _accepts(local_port) or forward.poll() is not None, "ssh -L to listen")
        with socket.create_connection(("127.0.0.1", local_port), timeout=10) as tunnel:
            tunnel.settimeout(10)
            assert tunnel.recv(100) == b""  # closed by the client: the channel was refused
        with socket.create_connection(("127.0.0.1", socks_port), timeout=10) as socks:
            socks.settimeout(10)
            request = b"\x04\x01" + listener.port.to_bytes(2, "big") + bytes([127, 0, 0, 1])
            socks.sendall(request + b"\x00")
            assert socks.recv(100)[:2] != b"\x00\x5a"  # not granted
    finally:
        # SIGKILL, not SIGTERM: ssh acts on a SIGTERM that lands between its check of the quit
        # flag and its poll only at the next packet, and -N brings none (CI waited 30 s for
        # it). Its messages are in the pipe already.
        forward.kill()
        _, errors = forward.communicate(timeout=30)
    assert "administratively prohibited" in errors.decode(errors="replace")

    # A subsystem (sftp) gets the forced command, which refuses it.
    sftp = subprocess.run(
        [*ci.ssh_argv, "-s", host, "sftp"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sftp.returncode != 0
    assert listener.accepted == 0

    # The limits: the key deploys blog, an admin then holds it in.
    work = Work.create(tmp_path / "blog", WEB, ssh=ci.git_ssh_command)
    push = work.push(ci.url("blog"), "main")
    assert push.returncode == 0, push.stderr
    assert "-----> Released v1" in remote_lines(push.stderr)
    dokuen.ctl("config:set", "blog", "DOKUEN_PROCESS_LIMIT=64", "DOKUEN_MEMORY_LIMIT=256M")
    for asked, key in [
        ("dokuenctl config:set blog DOKUEN_PROCESS_LIMIT=4194304", "DOKUEN_PROCESS_LIMIT"),
        ("dokuenctl config:set blog GREETING=hi DOKUEN_MEMORY_LIMIT=1T", "DOKUEN_MEMORY_LIMIT"),
        ("dokuenctl config:unset blog DOKUEN_PROCESS_LIMIT", "DOKUEN_PROCESS_LIMIT"),
    ]:
        refused = ci.ssh(asked)
        assert refused.returncode == 1, (asked, refused.stderr)
        assert refused.stderr.startswith(f"error: {CI_IS} may not change {key}: "), refused.stderr
    assert ci.ssh("dokuenctl config:set blog GREETING=hi").returncode == 0  # its own config
    rolled = ci.ssh("dokuenctl rollback blog v1")
    assert rolled.returncode == 0, rolled.stderr
    config = dokuen.ctl("config", "blog").stdout
    assert "DOKUEN_PROCESS_LIMIT=64" in config, config
    assert "DOKUEN_MEMORY_LIMIT=256M" in config, config
    assert "GREETING" not in config  # the rest of the config is v1's, as Heroku does
    wait_for(lambda: dokuen.running("blog", 1), "blog to run after the rollback")
    # An admin key may lift them.
    lifted = dokuen.ctl("config:unset", "blog", "DOKUEN_PROCESS_LIMIT")
    assert lifted.returncode == 0
    assert "DOKUEN_PROCESS_LIMIT" not in dokuen.ctl("config", "blog").stdout


def _linking_buildpack(path: Path, target: Path) -> str:
    """A buildpack in a git repository at ``path`` (its file:// URL returned) whose
    ``export`` is a link to ``target``; it detects and compiles anything."""
    work = Work(path / "work")
    (work.path / "bin").mkdir(parents=True)
    for name in ("detect", "compile"):
        (work.path / "bin" / name).write_text("#!/bin/sh\necho Linked\n")
        (work.path / "bin" / name).chmod(0o755)
    (work.path / "export").symlink_to(target)
    work.git("init", "-q", "-b", "main")
    work.commit("buildpack")
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(work.path), str(path / "bp.git")], check=True
    )
    return f"file://{path / 'bp.git'}"


def _answer(port: int) -> dict[str, str] | None:
    try:
        env: dict[str, str] = get_json(port)
    except OSError:
        return None
    return env


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs apps as their users")
def test_an_apps_environment_never_reaches_a_process_that_runs_as_root(
    open_top: Path,  # noqa: F811
) -> None:
    """Each process enters its cgroup as root (a shell, then setpriv) before it becomes the
    app's uid. Before the fix those root steps ran with the app's environment, and the app
    chooses that (its .env, its config): LD_PRELOAD named a library root's dynamic loader
    loaded. glibc's own libmemusage.so stands for the app's library: it (re)creates the file
    MEMUSAGE_OUTPUT names, as whoever loads it. Here that file is another app's config
    var, root-only: the root steps overwrote it. Now they see nothing of the app's
    environment, and the app's own program still gets all of it."""
    library = next(iter(Path("/").glob("usr/lib/*/libmemusage.so")), None)
    assert library is not None, "glibc's libmemusage.so (Debian's libc6) is missing"
    daemon = start(open_top)
    try:
        daemon.ctl("apps:create", "beta")
        daemon.ctl("config:set", "beta", "SECRET=secret-of-beta")
        target = daemon.home / "apps" / "beta" / "env" / "SECRET"
        assert target.read_text() == "secret-of-beta"
        dotenv = f"LD_PRELOAD={library}\nMEMUSAGE_OUTPUT={target}\n"
        source = write_app(open_top / "src" / "alpha", WEB, {".env": dotenv})
        daemon.deploy("alpha", source)  # web.1 started (its root steps ran) before this returns
        ran = daemon.ctl("run", "alpha", "echo ran as $(id -u)").stdout
        assert target.read_bytes() == b"secret-of-beta"
        assert daemon.ctl("config:get", "beta", "SECRET").stdout == "secret-of-beta\n"
        rows = wait_for(lambda: daemon.running("alpha", 1), "alpha to run")
        env = wait_for(lambda: _answer(rows[0]["port"]), "alpha to answer")
        # The app's own program got what it asked for (a Heroku app may preload jemalloc).
        assert env["LD_PRELOAD"] == str(library)
        assert env["MEMUSAGE_OUTPUT"] == str(target)
        assert not [key for key in env if key.startswith("DOKUEN_")], env
        assert ran.endswith(f"ran as {identity(daemon, 'alpha')['uid']}\n"), ran
    finally:
        daemon.terminate()


REUSING_SERVER = """\
import http.server, os, socket

class Server(http.server.HTTPServer):
    def server_bind(self):  # as gunicorn --reuse-port, uvicorn workers, node's cluster do
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"beta\\n")

    def log_message(self, *args):
        pass

Server(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""
# Run by `dokuenctl run APP python3 -c SHARE PORT`: join the listener on PORT.
SHARE = """\
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen()
    print("shared")
except OSError as exc:
    print("refused", exc.errno)
"""
# Run detached: hold every free port from FIRST to LAST, then wait.
HOG = """\
import socket, sys, time
held = []
for port in range(int(sys.argv[1]), int(sys.argv[2]) + 1):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        s.listen()
        held.append(s)
    except OSError:
        s.close()
print(f"holding {len(held)} ports", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs apps as their users")
def test_an_app_cannot_join_another_apps_listener_and_a_port_hog_takes_nothing_that_serves(
    open_top: Path,  # noqa: F811
) -> None:
    """beta's server sets SO_REUSEPORT (many do), which lets a second socket of the same
    uid share its port and take half its connections: alpha's process tries it and is
    refused, as its own uid; a process of beta's may (so the probe can tell). Then alpha
    holds every free port of the range: beta cannot start another process (a scale here, a
    deploy's new web processes behind nginx) and says why, and its running web process
    keeps serving. That beta cannot grow while alpha squats is the known limit
    (docs/security.md, "Ports")."""
    daemon = start(open_top)
    try:
        beta = write_app(open_top / "src" / "beta", "web: python3 reuse.py\n")
        (beta / "reuse.py").write_text(REUSING_SERVER)
        daemon.deploy("beta", beta)
        daemon.deploy("alpha", write_app(open_top / "src" / "alpha", WEB))
        port = wait_for(lambda: daemon.running("beta", 1), "beta to run")[0]["port"]
        share = ["run", "--no-tty", "{app}", "python3", "-c", SHARE, str(port)]
        alpha_try = daemon.ctl(*[a.format(app="alpha") for a in share]).stdout
        beta_try = daemon.ctl(*[a.format(app="beta") for a in share]).stdout
        assert alpha_try.strip() == "refused 98", alpha_try  # EADDRINUSE
        assert beta_try.strip() == "shared", beta_try

        first, last = daemon.ports
        daemon.ctl("run:detached", "alpha", "python3", "-c", HOG, str(first), str(last))
        wait_for(lambda: "holding" in daemon.log(), "alpha to hold the ports")
        scale = daemon.ctl("ps:scale", "beta", "web=2", check=False)
        assert scale.returncode == 1, daemon.log()[-3000:]
        assert f"no free port in {first}-{last}" in scale.stderr, scale.stderr
        rows = daemon.ps("beta")
        assert [(r["name"], r["port"], r["state"]) for r in rows] == [("web.1", port, "running")]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert conn.makefile("rb").read().endswith(b"beta\n")
        hog = [row["name"] for row in daemon.ps("alpha") if row["type"] == "run"]
        daemon.ctl("ps:stop", "alpha", *hog)
        wait_for(
            lambda: daemon.ctl("ps:scale", "beta", "web=2", check=False).returncode == 0,
            "beta to get a port once the hog is gone",
        )
    finally:
        daemon.terminate()


def test_a_pushed_gitattributes_runs_no_filter_and_changes_no_byte(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    """The push is checked out by the platform's account (root, often) with git, which
    obeys the tree's .gitattributes: ``filter=NAME`` runs the driver that account's git
    config defines (git-lfs's, after ``git lfs install``, fetches from the URL the tree's
    .lfsconfig names), ``text eol=crlf`` and ``ident`` rewrite files. The account's config
    here (its HOME is the pusher's in a local push) defines a driver that leaves a mark."""
    mark = tmp_path / "filter-ran"
    home = tmp_path / "home-of-account"
    home.mkdir()
    (home / ".gitconfig").write_text(
        f'[filter "probe"]\n\tsmudge = "touch {mark}; cat"\n\tclean = cat\n\trequired = false\n'
    )
    dokuen.ctl("apps:create", "blog")
    work = Work.create(home / "blog", WEB)
    work.commit(
        "attributes",
        {
            "script.sh": "line one\nline two\n",
            "id.txt": "$Id$\n",
        },
    )
    (work.path / ".gitattributes").write_text(
        "* filter=probe\nscript.sh text eol=crlf\nid.txt ident\n"
    )
    work.commit("attributes after the files, so the work tree keeps them as written")
    assert not mark.exists()
    push = work.push(str(dokuen.home / "apps" / "blog" / "repo.git"), "main")
    assert push.returncode == 0, push.stderr
    release = dokuen.home / "apps" / "blog" / "releases" / "v1"
    ran = mark.exists()
    assert (release / "script.sh").read_bytes() == b"line one\nline two\n", ran
    assert (release / "id.txt").read_bytes() == b"$Id$\n"
    assert not mark.exists(), "the filter named by the pushed .gitattributes ran"


# Forks until the kernel says no, then reports and waits. It gives up at 200 (a shared CI
# machine): a missing limit then fails the test rather than taking the machine.
FORK_BOMB = """\
import os, time
forked = 0
try:
    while forked < 200:
        if os.fork() == 0:
            time.sleep(3600)
            os._exit(0)
        forked += 1
    print("forked 200 and no limit stopped it", flush=True)
except OSError as exc:
    print(f"forked {forked} then {type(exc).__name__}", flush=True)
time.sleep(3600)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups are root's to hand out here")
def test_an_app_that_sets_no_process_limit_still_has_one(tmp_path: Path) -> None:
    """An app's fork bomb, with no DOKUEN_PROCESS_LIMIT set, stops at the platform's
    default (DOKUEN_APP_PROCESSES, small here; 4096 by default), and the other app still
    starts processes. Before, the bomb had the machine's whole process table."""
    daemon = Dokuen(
        home=tmp_path / "home",
        ports=free_port_block(),
        extra_env={"DOKUEN_APP_PROCESSES": "12"},
    )
    daemon.start()
    try:
        status = json.loads(daemon.ctl("status", "--json").stdout)["cgroups"]
        if "pids" not in status["controllers"]:
            pytest.skip(f"no pids controller here ({status['problem']})")
        bomb = write_app(tmp_path / "bomb", "worker: python3 bomb.py\n", {"bomb.py": FORK_BOMB})
        daemon.deploy("bomb", bomb)
        wait_for(lambda: "forked 11 then BlockingIOError" in daemon.log(), "the bomb to stop")
        daemon.deploy("calm", write_app(tmp_path / "calm", WEB))
        wait_for(lambda: daemon.running("calm", 1), "the other app to run")
        assert daemon.ctl("run", "calm", "echo still forking").stdout == "still forking\n"
        # The app's own limit, an admin's, wins over the default.
        daemon.ctl("config:set", "bomb", "DOKUEN_PROCESS_LIMIT=20")
        wait_for(lambda: "forked 19 then BlockingIOError" in daemon.log(), "the app's own limit")
    finally:
        daemon.terminate()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs builds as their own users")
def test_a_buildpack_path_tells_nothing_of_another_apps_private_directories(
    open_top: Path,  # noqa: F811
) -> None:
    """A ``.buildpacks`` line is a directory dokuend (root) looks at before the build (its
    own uid) runs from it. Through ``OTHER/releases/v1/DIR/../../...`` that look told
    whether beta's private release holds DIR: "it has no bin/detect" when it does, "no
    such buildpack directory" when not. Now both get the same answer."""
    daemon = start(open_top)
    try:
        beta = write_app(open_top / "src" / "beta", WEB)
        (beta / "private-dir").mkdir()
        daemon.deploy("beta", beta)
        release = daemon.home / "apps" / "beta" / "releases" / "v1"
        assert (release / "private-dir").is_dir()
        answers = []
        for name in ("private-dir", "no-such-dir"):
            climb = "/".join([str(release / name), *[".."] * (len(release.parts) + 2), "usr"])
            source = write_app(open_top / "src" / f"alpha-{name}", WEB, {".buildpacks": climb})
            result = daemon.deploy_result("alpha", source)
            assert result.returncode == 1
            answers.append(result.stderr.replace(name, "DIR"))
        assert answers[0] == answers[1], answers
        assert "no such buildpack directory (it needs a bin/" in answers[0], answers[0]

        # A buildpack the build clones is the build's: its files may be links anywhere.
        # Root used to look through `export` to decide whether to source it (and the build
        # then failed, unable to read it): whether beta had a config var of that name.
        daemon.ctl("config:set", "beta", "SECRET_KEY=of-beta")
        outcomes = []
        for key in ("SECRET_KEY", "NO_SUCH_KEY"):
            pack = _linking_buildpack(open_top / f"bp-{key}", daemon.home / "apps/beta/env" / key)
            shutil.chown(open_top / f"bp-{key}", identity(daemon, "alpha")["build_uid"])
            for path in (open_top / f"bp-{key}").rglob("*"):
                os.chown(path, identity(daemon, "alpha")["build_uid"], -1, follow_symlinks=False)
            twice = f"{pack}\n{pack}\n"  # the second's compile sources the first's export
            source = write_app(open_top / "src" / f"alpha-{key}", WEB, {".buildpacks": twice})
            result = daemon.deploy_result("alpha", source)
            outcomes.append((result.returncode, "failed to compile" in result.stderr))
        assert outcomes[0] == outcomes[1] == (0, False), outcomes
    finally:
        daemon.terminate()


LONGEST = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253: what domains:add takes


def test_one_apps_longest_domain_stops_no_other_apps_change(tmp_path: Path) -> None:
    """A domain of 253 characters (legal: domains:add takes it) used to overflow nginx's
    server-name hash: nginx -t refused every config after it, so no other app could deploy
    or add a domain until it was removed. Now the managed nginx has room for it."""
    from tests.e2e.test_nginx import env_via, http_port, nginx_dokuen  # noqa: PLC0415

    with nginx_dokuen(tmp_path / "home") as daemon:
        port = http_port(daemon)
        daemon.deploy("blog", write_app(tmp_path / "blog", WEB))
        daemon.deploy("shop", write_app(tmp_path / "shop", WEB))
        daemon.ctl("domains:add", "blog", LONGEST)
        assert daemon.ctl("deploy", "shop", str(tmp_path / "shop")).returncode == 0
        daemon.ctl("domains:add", "shop", "shop.example.com")
        env = wait_for(lambda: env_via(port, "shop.example.com"), "shop on its new domain")
        assert env["APP"] == "shop"
        assert wait_for(lambda: env_via(port, LONGEST), "blog on the long domain")["APP"] == "blog"


def test_a_domain_nginx_refuses_is_not_kept_to_stop_the_others(tmp_path: Path) -> None:
    """With the system's nginx (DOKUEN_NGINX=system), its own nginx.conf sets the hash, and
    the default (64) is too small for 253 characters: the add is refused and undone, so
    the next change of another app goes through."""
    from tests.e2e.test_nginx import env_via, nginx_dokuen, system_nginx  # noqa: PLC0415

    with (
        system_nginx(tmp_path) as (home, port, wrapper),
        nginx_dokuen(home, port, DOKUEN_NGINX="system", DOKUEN_NGINX_BINARY=str(wrapper)) as daemon,
    ):
        wait_for((home / "nginx/dokuen-http.conf").exists, "the include file")
        subprocess.run([str(wrapper)], check=True)  # the system's nginx starts
        daemon.deploy("blog", write_app(tmp_path / "blog", WEB))
        daemon.deploy("shop", write_app(tmp_path / "shop", WEB))
        refused = daemon.ctl("domains:add", "blog", LONGEST, check=False)
        assert refused.returncode == 1
        assert refused.stderr.startswith(f"error: domain {LONGEST} was not added: nginx -t")
        assert LONGEST not in daemon.ctl("domains", "blog").stdout
        daemon.ctl("domains:add", "shop", "shop.example.com")
        env = wait_for(lambda: env_via(port, "shop.example.com"), "shop on its domain")
        assert env["APP"] == "shop"
