"""nginx in front of every app, end to end: dokuend's own nginx master on a loopback port."""

import contextlib
import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dokuen.client import request
from dokuen.errors import DokuenError
from tests.e2e.conftest import Dokuen, find_nginx_binary, free_port_block, wait_for, write_app

NGINX = find_nginx_binary()
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (bin/setup installs it)"
)
WEB = "web: python3 envserver.py\n"


def get(port: int, host: str, path: str = "/") -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def env_via(port: int, host: str) -> dict[str, Any] | None:
    try:
        status, body = get(port, host)
    except OSError:
        return None
    return json.loads(body) if status == 200 else None


@contextlib.contextmanager
def nginx_dokuen(home: Path, port: int | None = None, **settings: str) -> Iterator[Dokuen]:
    """A running dokuend with nginx in front on 127.0.0.1:PORT (a free one by default),
    with any other settings given; stopped at the end."""
    daemon = Dokuen(
        home=home,
        ports=free_port_block(),
        extra_env={
            "DOKUEN_NGINX": "managed",
            "DOKUEN_HTTP_PORT": str(port or free_port_block(1)[0]),
            "DOKUEN_HTTP_ADDR": "127.0.0.1",
            **settings,
        },
    )
    daemon.start()
    try:
        yield daemon
    finally:
        if daemon.process is not None:
            daemon.terminate()


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Dokuen]:
    with nginx_dokuen(tmp_path / "home") as daemon:
        yield daemon


def http_port(dokuen: Dokuen) -> int:
    return int(dokuen.extra_env["DOKUEN_HTTP_PORT"])


def test_two_apps_on_two_subdomains_and_404_for_an_unknown_host(
    proxied: Dokuen, apps_dir: Path
) -> None:
    port = http_port(proxied)
    proxied.deploy("blog", write_app(apps_dir / "blog", WEB))
    proxied.deploy("shop", write_app(apps_dir / "shop", WEB))
    blog = wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
    shop = wait_for(lambda: env_via(port, "shop.localhost"), "shop through nginx")
    assert (blog["APP"], shop["APP"]) == ("blog", "shop")
    assert get(port, "nope.localhost") == (404, "no app answers on this host\n")
    proxied.ctl("apps:create", "empty")
    assert get(port, "empty.localhost") == (503, "empty has no running web process\n"), (
        proxied.log()
    )
    status = json.loads(proxied.ctl("status", "--json").stdout)
    assert status["urls"]["blog"] == f"http://blog.localhost:{port}/"
    assert proxied.ps("blog")[0]["url"] == f"http://blog.localhost:{port}/"
    assert f"blog: http://blog.localhost:{port}/" in proxied.ctl("ps").stdout
    assert status["nginx"]["mode"] == "managed"
    assert status["nginx"]["problem"] is None


def test_scale_web_to_three_and_all_three_answer(proxied: Dokuen, apps_dir: Path) -> None:
    port = http_port(proxied)
    proxied.deploy("blog", write_app(apps_dir / "blog", WEB))
    proxied.ctl("ps:scale", "blog", "web=3")
    wait_for(lambda: proxied.running("blog", 3), "three web processes")
    seen: set[str] = set()

    def all_three() -> bool:
        env = env_via(port, "blog.localhost")
        if env:
            seen.add(env["DYNO"])
        return seen == {"web.1", "web.2", "web.3"}

    wait_for(all_three, "answers from web.1, web.2 and web.3")
    proxied.ctl("ps:scale", "blog", "web=1")
    wait_for(lambda: proxied.running("blog", 1), "one web process")
    for _ in range(10):
        env = env_via(port, "blog.localhost")
        assert env is not None
        assert env["DYNO"] == "web.1"


def test_domains_are_added_removed_and_strictly_checked(proxied: Dokuen, apps_dir: Path) -> None:
    port = http_port(proxied)
    proxied.deploy("blog", write_app(apps_dir / "blog", WEB))
    proxied.deploy("shop", write_app(apps_dir / "shop", WEB))
    assert proxied.ctl("domains:add", "blog", "notes.home.example").returncode == 0
    assert proxied.ctl("domains", "blog").stdout == "blog.localhost\nnotes.home.example\n"
    env = wait_for(lambda: env_via(port, "notes.home.example"), "the new domain")
    assert env["APP"] == "blog"
    taken = proxied.ctl("domains:add", "shop", "notes.home.example", check=False)
    assert taken.returncode == 1
    assert "domain 'notes.home.example' already belongs to app 'blog'" in taken.stderr
    for bad in ["a b.example", "x;y", "x{", "evil.example\nserver", "*.example.com", "x" * 254]:
        result = proxied.ctl("domains:add", "blog", bad, check=False)
        assert result.returncode == 2, bad
        assert "invalid domain" in result.stderr
    conf = (proxied.home / "nginx/apps/blog.conf").read_text()
    assert "server_name blog.localhost notes.home.example;" in conf
    proxied.ctl("domains:remove", "blog", "notes.home.example")
    wait_for(lambda: get(port, "notes.home.example")[0] == 404, "the domain to be gone")


def test_nginx_killed_under_the_daemon_comes_back_with_the_map(
    proxied: Dokuen, apps_dir: Path
) -> None:
    port = http_port(proxied)
    proxied.deploy("blog", write_app(apps_dir / "blog", WEB))
    wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
    kill_master(proxied)
    assert wait_for(lambda: env_via(port, "blog.localhost"), "blog again")["APP"] == "blog"
    assert "nginx[dokuen]: nginx killed by SIGKILL" in proxied.log()


def refusing_nginx(tmp_path: Path) -> tuple[str, Path]:
    """An nginx whose ``-t`` refuses while the file ``refuse`` exists: the wrapper's path
    and that file's."""
    assert NGINX is not None
    refuse = tmp_path / "refuse"
    wrapper = tmp_path / "nginx-wrapper"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -t ] && [ -e {refuse} ]; then echo "nginx: [emerg] refused" >&2; exit 1; fi\n'
        f'exec {NGINX} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper), refuse


def kill_master(daemon: Dokuen) -> None:
    """SIGKILL the nginx master's process group; return once dokuend runs a new master."""
    master = json.loads(daemon.ctl("status", "--json").stdout)["nginx"]["pid"]
    os.killpg(master, signal.SIGKILL)
    wait_for(
        lambda: (
            json.loads(daemon.ctl("status", "--json").stdout)["nginx"]["pid"] not in (None, master)
        ),
        "a new nginx master",
    )


def test_a_config_that_fails_nginx_t_leaves_the_live_config(tmp_path: Path, apps_dir: Path) -> None:
    wrapper, refuse = refusing_nginx(tmp_path)
    with nginx_dokuen(tmp_path / "home", DOKUEN_NGINX_BINARY=wrapper) as daemon:
        port = http_port(daemon)
        daemon.deploy("blog", write_app(apps_dir / "blog", WEB))
        wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
        live = (daemon.home / "nginx/apps/blog.conf").read_text()
        refuse.touch()
        result = daemon.ctl("domains:add", "blog", "notes.home.example", check=False)
        assert result.returncode == 1
        assert "nginx -t refused the new config: nginx: [emerg] refused" in result.stderr
        assert (daemon.home / "nginx/apps/blog.conf").read_text() == live
        assert env_via(port, "blog.localhost") is not None
        assert get(port, "notes.home.example")[0] == 404
        assert "nginx[dokuen]: config not applied" in daemon.log()


def test_nginx_not_installed_falls_back_to_off_with_a_warning(
    tmp_path: Path, apps_dir: Path
) -> None:
    with nginx_dokuen(tmp_path / "home", DOKUEN_NGINX_BINARY=str(tmp_path / "none")) as daemon:
        daemon.deploy("blog", write_app(apps_dir / "blog", WEB))
        (row,) = wait_for(lambda: daemon.running("blog", 1), "web.1")
        status = daemon.ctl("status")
        assert "nginx      off" in status.stdout
        assert "warning: nginx is not installed (apt install nginx)" in status.stderr
        assert f"blog       http://127.0.0.1:{row['port']}/" in status.stdout


def test_the_http_port_already_taken_is_a_clear_problem(tmp_path: Path, apps_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with nginx_dokuen(tmp_path / "home", port) as daemon:
            status = daemon.ctl("status")
            assert (
                f"warning: port {port} is already in use, so nginx cannot listen" in status.stderr
            )
            daemon.deploy("blog", write_app(apps_dir / "blog", WEB))
            wait_for(lambda: daemon.running("blog", 1), "web.1 runs all the same")


class Load:
    """A client loop sending requests through nginx until stopped, counting every answer."""

    def __init__(self, port: int, host: str) -> None:
        self.port, self.host = port, host
        self.releases: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = get(self.port, self.host)
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            if status != 200:
                self.failures.append(f"{status} {body[:80]}")
            else:
                self.releases.append(Path(json.loads(body)["PWD"]).name)  # its release

    def __enter__(self) -> "Load":
        self._thread.start()
        wait_for(lambda: len(self.releases) > 5, "the load to get answers")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def workers(master: int) -> dict[int, str]:
    """The nginx master's children and the state of each (Z: exited, not yet reaped)."""
    found = {}
    for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        with contextlib.suppress(FileNotFoundError):
            found[int(pid)] = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return found


def test_restart_and_deploy_under_load_drop_no_request(proxied: Dokuen, apps_dir: Path) -> None:
    port = http_port(proxied)
    source = write_app(apps_dir / "blog", WEB)
    proxied.deploy("blog", source)
    proxied.ctl("ps:scale", "blog", "web=2")
    wait_for(lambda: proxied.running("blog", 2), "two web processes")
    master = json.loads(proxied.ctl("status", "--json").stdout)["nginx"]["pid"]
    first_workers = workers(master)
    with Load(port, "blog.localhost") as load:
        before = proxied.ps("blog")
        proxied.ctl("restart", "blog")
        after = proxied.ps("blog")
        assert {row["pid"] for row in before}.isdisjoint(row["pid"] for row in after)
        proxied.ctl("deploy", "blog", str(source))  # v2
        wait_for(lambda: load.releases[-1] == "v2", "answers from v2")
        served_after_deploy = len(load.releases)
        wait_for(lambda: len(load.releases) > served_after_deploy + 20, "more answers")
    assert load.failures == []
    assert load.releases[0] == "v1"
    # During a reload nginx's old and new workers both accept for a moment, so v1 and v2
    # may alternate briefly; after the deploy returned, only v2 answers.
    assert set(load.releases[served_after_deploy:]) == {"v2"}
    # The old workers were told to quit as soon as the new ones ran, before the master
    # itself does: once it reaped them it started no replacement (as many workers as at
    # first, none of them old).
    wait_for(lambda: "Z" not in workers(master).values(), "the master to reap the old workers")
    now = workers(master)
    assert len(now) == len(first_workers)
    assert not set(now) & set(first_workers)


def test_a_deploy_that_never_opens_its_port_fails_and_the_old_release_serves(
    proxied: Dokuen, apps_dir: Path
) -> None:
    port = http_port(proxied)
    proxied.deploy("blog", write_app(apps_dir / "blog", WEB))
    proxied.ctl("config:set", "blog", "DOKUEN_BOOT_TIMEOUT=1.5")  # v2, v1's slug
    broken = write_app(apps_dir / "broken", "web: echo starting up; exec sleep 1000\n")
    with Load(port, "blog.localhost") as load:
        result = proxied.ctl("deploy", "blog", str(broken), check=False)
        served = len(load.releases)
        wait_for(lambda: len(load.releases) > served + 20, "answers after the failed deploy")
    assert result.returncode == 1
    assert "deploy of v3 failed: web.1 of the new processes did not answer a TCP connect" in (
        result.stderr
    )
    assert (
        "within 1.5s; the old ones keep serving. Its last lines:\n    starting up" in result.stderr
    )
    assert load.failures == []
    assert set(load.releases) == {"v1"}
    current = (proxied.home / "apps/blog/current").readlink()
    assert current.name == "v2"  # the pointer went back to what serves


def test_changes_that_arrive_together_cost_one_reload(proxied: Dokuen, apps_dir: Path) -> None:
    port = http_port(proxied)
    proxied.deploy("blog", write_app(apps_dir / "blog", WEB))
    wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
    reloads = proxied.log().count("nginx[dokuen]: reloaded")
    proxied.ctl("ps:scale", "blog", "web=10")
    assert proxied.log().count("nginx[dokuen]: reloaded") == reloads + 1
    conf = (proxied.home / "nginx/apps/blog.conf").read_text()
    assert conf.count("server 127.0.0.1:") == 10
    # A boot with several apps: each reaches nginx whole (all ten of blog's web processes
    # in one reload) as soon as it is up, without waiting for the others' health checks.
    for name in ("shop", "wiki", "notes"):
        proxied.deploy(name, write_app(apps_dir / name, WEB))
    assert proxied.terminate() == 0
    proxied.start()
    wait_for(lambda: proxied.running("blog", 10), "blog's ten web processes")

    def since_boot() -> str:
        return proxied.log().rsplit("nginx[dokuen]: master started", 1)[1]

    wait_for(lambda: "nginx[dokuen]: reloaded" in since_boot(), "the boot's reload")
    wait_for(lambda: env_via(port, "notes.localhost"), "the last app through nginx")
    boot = since_boot()
    assert 1 <= boot.count("nginx[dokuen]: reloaded (4 apps)") <= 4
    assert boot.count("nginx[dokuen]: reloaded") == boot.count("reloaded (4 apps)")
    for name in ("blog", "shop", "wiki", "notes"):  # each as soon as its own batch ended

        def answers(name: str = name) -> dict[str, Any] | None:
            return env_via(port, f"{name}.localhost")

        wait_for(answers, f"{name} through nginx")


@contextlib.contextmanager
def system_nginx(tmp_path: Path) -> Iterator[tuple[Path, int, Path]]:
    """A stand-in for the system's nginx: its own nginx.conf with the one include line the
    README shows, and an `nginx` wrapper that points -t and -s reload at it; the home that
    include names, the port it listens on and the wrapper. Stopped afterwards."""
    assert NGINX is not None
    port = free_port_block(1)[0]
    home = tmp_path / "home"
    system = tmp_path / "system-nginx"
    for directory in ("logs", "temp"):
        (system / directory).mkdir(parents=True)
    (system / "nginx.conf").write_text(
        f"pid {system}/nginx.pid;\nerror_log {system}/logs/error.log;\n"
        "events {}\nhttp {\n"
        f"    client_body_temp_path {system}/temp; proxy_temp_path {system}/temp;\n"
        f"    server {{ listen 127.0.0.1:{port} default_server; return 404; }}\n"
        f"    include {home}/nginx/dokuen-http.conf;\n}}\n"
    )
    wrapper = tmp_path / "nginx"
    wrapper.write_text(f'#!/bin/sh\nexec {NGINX} -p {system} -c {system}/nginx.conf "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    try:
        yield home, port, wrapper
    finally:
        pid_file = system / "nginx.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGQUIT)


def test_system_mode_writes_files_a_system_nginx_includes(tmp_path: Path, apps_dir: Path) -> None:
    with (
        system_nginx(tmp_path) as (home, port, wrapper),
        nginx_dokuen(home, port, DOKUEN_NGINX="system", DOKUEN_NGINX_BINARY=str(wrapper)) as daemon,
    ):
        wait_for((home / "nginx/dokuen-http.conf").exists, "the include file")
        subprocess.run([str(wrapper)], check=True)  # the system's nginx starts (forks)
        daemon.deploy("blog", write_app(apps_dir / "blog", WEB))
        env = wait_for(lambda: env_via(port, "blog.localhost"), "blog via the system nginx")
        assert env["APP"] == "blog"
        status = daemon.ctl("status")
        assert f"nginx      system, listening on 127.0.0.1:{port}" in status.stdout
        assert "system nginx reloaded" in daemon.log()


def test_a_web_process_that_never_answers_is_killed_and_retried(
    proxied: Dokuen, apps_dir: Path
) -> None:
    proxied.ctl("apps:create", "mute")
    proxied.ctl("config:set", "mute", "DOKUEN_BOOT_TIMEOUT=0.5")
    # Its first life serves (a first deploy is health-gated: test_switch.py); every later
    # one never answers.
    web = "web: test -f $HOME/up && exec sleep 1000; touch $HOME/up; exec python3 envserver.py\n"
    proxied.ctl("deploy", "mute", str(write_app(apps_dir / "mute", web)))
    os.kill(proxied.ps("mute")[0]["pid"], signal.SIGKILL)
    wait_for(lambda: proxied.ps("mute")[0]["restarts"] >= 3, "two boot timeouts")
    log = proxied.log()
    assert "mute[dokuen]: web.1 did not answer a TCP connect on port" in log
    assert "within 0.5s, killing it" in log
    assert "mute[dokuen]: web.1 killed by SIGKILL, restarting in" in log
    assert proxied.ps("mute")[0]["state"] in ("starting", "backoff")
    assert get(http_port(proxied), "mute.localhost")[0] == 503  # never in the upstream


def test_a_new_app_is_refused_the_host_another_app_took_as_its_domain(
    proxied: Dokuen, apps_dir: Path
) -> None:
    """An app (or its scoped key) that added ``later.localhost`` before app ``later`` existed
    does not get to share, serve or take a certificate for the new app's own host: the new
    app is refused in one line naming the fix."""
    port = http_port(proxied)
    proxied.deploy("blog", write_app(apps_dir / "blog", WEB))
    proxied.ctl("domains:add", "blog", "later.localhost")
    result = proxied.ctl("apps:create", "later", check=False)
    assert result.returncode == 1, result.stdout
    assert result.stderr == (
        "error: later.localhost, the host of app 'later', is a domain of app 'blog'; "
        "free it first: dokuenctl domains:remove blog later.localhost\n"
    )
    assert not (proxied.home / "apps" / "later").exists()
    env = wait_for(lambda: env_via(port, "later.localhost"), "blog on the domain")
    assert env["APP"] == "blog"
    proxied.ctl("apps:create", "notes")
    renamed = proxied.ctl("apps:rename", "notes", "later", check=False)
    assert renamed.returncode == 1
    assert "later.localhost, the host of app 'later', is a domain of app 'blog'" in renamed.stderr
    proxied.ctl("domains:remove", "blog", "later.localhost")
    proxied.ctl("apps:create", "later")


def test_claims_racing_a_busy_app_give_each_host_to_one_app(dokuen: Dokuen, apps_dir: Path) -> None:
    """A domains:add to an app that is busy (here: stopping a process that ignores SIGTERM)
    waits for the app; a claim on the same host meanwhile (the same domain for another app,
    or apps:create of the app whose host it is) must not both pass: each host ends up with
    exactly one app, and the loser is told in one line."""
    stubborn = "web: trap '' TERM; while :; do sleep 0.1; done\n"
    dokuen.deploy("alpha", write_app(apps_dir / "alpha", stubborn))
    dokuen.ctl("config:set", "alpha", "DOKUEN_STOP_TIMEOUT=3")
    wait_for(lambda: dokuen.running("alpha", 1), "alpha running")
    dokuen.ctl("apps:create", "beta")
    sock = dokuen.home / "dokuend.sock"

    def claim(command: str, args: dict[str, str]) -> str:
        try:
            request(sock, command, args, lambda _: None)
        except DokuenError as exc:
            return str(exc)
        return "ok"

    with ThreadPoolExecutor(max_workers=3) as pool:
        stopping = pool.submit(claim, "stop", {"app": "alpha"})
        wait_for(lambda: "stopping all processes" in dokuen.log(), "alpha stopping")
        waiting = [
            pool.submit(claim, "domains:add", {"app": "alpha", "domain": d})
            for d in ("shop.example.com", "later.localhost")
        ]
        time.sleep(0.5)  # both requests have reached dokuend and wait for alpha
        assert not any(future.done() for future in waiting)
        other = claim("domains:add", {"app": "beta", "domain": "shop.example.com"})
        created = claim("apps:create", {"app": "later"})
        assert stopping.result() == "ok"
        first, squat = (future.result() for future in waiting)
    assert other == "ok", other
    assert first == "domain 'shop.example.com' already belongs to app 'beta'"
    assert created == "ok", created
    assert squat == "domain 'later.localhost' already belongs to app 'later'"
    assert dokuen.ctl("domains", "alpha").stdout.split() == ["alpha.localhost"]
    assert "shop.example.com" in dokuen.ctl("domains", "beta").stdout.split()
