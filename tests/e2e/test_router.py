"""Router lines and maintenance mode, end to end: real requests through dokuend's own nginx
show up in `dokuenctl logs` as Heroku router lines; maintenance mode answers 503."""

import concurrent.futures
import contextlib
import http.client
import json
import os
import re
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import Dokuen, wait_for, write_app
from tests.e2e.test_nginx import (
    WEB,
    env_via,
    get,
    http_port,
    kill_master,
    nginx_dokuen,
    proxied,  # noqa: F401 (a fixture)
    pytestmark,  # noqa: F401 (skipped without nginx)
    refusing_nginx,
)

ROUTER = re.compile(r"^\S+ (?P<app>[a-z0-9-]+)\[router\]: (?P<message>.*)$")


def router_lines(daemon: Dokuen, *args: str, last: int = 1000) -> list[str]:
    """The ``last`` router lines `dokuenctl logs --source router` prints (every line it
    prints must be one)."""
    out = daemon.ctl("logs", *args, "--source", "router", "-n", str(last)).stdout
    lines = out.splitlines()
    assert all(ROUTER.match(line) for line in lines), out
    return lines


def line_with(daemon: Dokuen, text: str, *args: str) -> str:
    found = wait_for(
        lambda: [line for line in router_lines(daemon, *args) if text in line],
        f"a router line with {text!r}",
    )
    return found[0]


def test_real_requests_become_router_lines_with_app_path_status_and_dyno(
    proxied: Dokuen,  # noqa: F811
    apps_dir: Path,
) -> None:
    port = http_port(proxied)
    proxied.deploy("blog", write_app(apps_dir / "blog", WEB))
    proxied.deploy("shop", write_app(apps_dir / "shop", WEB))
    wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
    assert get(port, "blog.localhost", '/posts/1?q="x"')[0] == 200
    assert get(port, "shop.localhost", "/cart")[0] == 200
    assert get(port, "nobody.localhost", "/unknown-host")[0] == 404
    line = line_with(proxied, "/posts/1", "blog")
    message = ROUTER.match(line)
    assert message is not None
    assert message["app"] == "blog"
    assert message["message"].startswith('at=info method=GET path="/posts/1?q=\\"x\\"" ')
    assert " host=blog.localhost " in line
    assert re.search(r" request_id=[0-9a-f]{8}-[0-9]+-[0-9]+-1 ", line), line
    assert ' fwd="127.0.0.1" dyno=web.1 ' in line
    assert re.search(r" connect=\d+ms service=\d+ms status=200 bytes=\d+ protocol=http$", line)
    shop = line_with(proxied, "/cart")
    assert shop.split(" ", 2)[1] == "shop[router]:"
    # A host no app answers on has no app, so no router line; the blog's filter is exact.
    assert not [line for line in router_lines(proxied) if "unknown-host" in line]
    assert all(" blog[router]: " in line for line in router_lines(proxied, "blog"))
    # Each source alone: the processes' own lines, the platform's events, the requests.
    app_lines = proxied.ctl("logs", "blog", "--source", "app", "-n", "1000").stdout
    assert "blog[web.1]: listening on" in app_lines
    assert "[router]" not in app_lines
    assert "[dokuen]" not in app_lines
    events = proxied.ctl("logs", "--source", "dokuen", "-n", "1000").stdout.splitlines()
    assert events
    assert all("[dokuen]: " in line for line in events)
    assert any(" blog[dokuen]: " in line for line in events)
    # Combined with --ps: a router line is not a web process's line.
    assert proxied.ctl("logs", "blog", "--ps", "web", "--source", "router").stdout == ""
    status = json.loads(proxied.ctl("status", "--json").stdout)
    assert status["nginx"]["router"]["lines"] >= 2
    assert status["nginx"]["router"]["unparsed"] == 0
    assert re.search(r"^router     \d+ lines, 0 unparsed", proxied.ctl("status").stdout, re.M)


# What an attacker sends as its own request id: a quote, spaces and words of a line.
FORGED_ID = 'evil" status=500 dyno=web.9 request_id=forged'
REQUEST_ID = re.compile(r"([0-9a-f]{8})-([0-9]+)-([0-9]+)-([0-9]+)")


def nonce_of(daemon: Dokuen, app: str) -> str:
    """The nonce the app's file starts request ids with (in its header and its format)."""
    text = (daemon.home / "nginx" / "apps" / f"{app}.conf").read_text()
    nonces: set[str] = set(
        re.findall(r"([0-9a-f]{8})-\$pid-\$connection-\$connection_requests", text)
    )
    assert len(nonces) == 1, text
    return nonces.pop()


def burst(port: int, tag: str, connections: int = 4, each: int = 15) -> dict[str, list[str]]:
    """``each`` requests on each of ``connections`` keepalive connections at once, every one
    with a forged X-Request-Id; the X-Request-Id values the app got, by path."""

    def one_connection(number: int) -> dict[str, list[str]]:
        got = {}
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for n in range(each):
                path = f"/{tag}/{number}/{n}"
                headers = {"Host": "blog.localhost", "X-Request-Id": FORGED_ID}
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                assert response.status == 200
                got[path] = json.loads(response.read())["request_ids"]
        finally:
            connection.close()
        return got

    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        return {
            k: v for part in pool.map(one_connection, range(connections)) for k, v in part.items()
        }


def test_request_ids_are_unique_across_reloads_and_restarts_and_what_the_app_got(
    proxied: Dokuen,  # noqa: F811
    apps_dir: Path,
) -> None:
    """The id the app gets (X-Request-Id, the client's own replaced) is the router line's
    ``request_id=``; ids never repeat over several keepalive connections, a reload that
    rewrote the files and a master killed and started again by dokuend; the nonce changes
    with the files and only then."""
    port = http_port(proxied)
    proxied.deploy("blog", write_app(apps_dir / "blog", WEB))
    wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
    nonces = [nonce_of(proxied, "blog")]
    got = burst(port, "first")
    # A change that changes no file (maintenance off, and it is off): no new nonce, no reload.
    reloads = proxied.log().count("nginx[dokuen]: reloaded")
    proxied.ctl("maintenance:off", "blog")
    assert nonce_of(proxied, "blog") == nonces[0]
    assert proxied.log().count("nginx[dokuen]: reloaded") == reloads
    proxied.ctl("domains:add", "blog", "notes.home.example")  # new files, reloaded
    nonces.append(nonce_of(proxied, "blog"))
    got |= burst(port, "reloaded")
    kill_master(proxied)
    nonces.append(nonce_of(proxied, "blog"))  # the files again, before it started
    wait_for(lambda: env_via(port, "blog.localhost"), "blog again")
    got |= burst(port, "restarted")
    assert len(set(nonces)) == 3, nonces

    def every_line() -> dict[str, str] | None:
        found = {}
        for line in router_lines(proxied, "blog", last=100_000):
            path = line.split(' path="', 1)[1].split('"', 1)[0]
            if path in got:
                found[path] = line
        return found if found.keys() == got.keys() else None

    lines = wait_for(every_line, "every request's line")
    ids: dict[str, re.Match[str]] = {}
    for path, line in lines.items():
        assert " status=200 " in line
        assert " dyno=web.1 " in line
        assert "evil" not in line
        assert "forged" not in line
        (request_id,) = re.findall(r" request_id=(\S+) ", line)
        assert got[path] == [request_id], (path, got[path], line)  # one header: nginx's
        match = REQUEST_ID.fullmatch(request_id)
        assert match is not None, request_id
        ids[path] = match
    assert len({match[0] for match in ids.values()}) == len(got) == 3 * 4 * 15
    for tag, nonce in zip(("first", "reloaded", "restarted"), nonces, strict=True):
        for number in range(4):
            one = [ids[f"/{tag}/{number}/{n}"] for n in range(15)]
            assert {match[1] for match in one} == {nonce}
            # One connection: one worker, one connection number, its requests counted.
            assert len({(match[2], match[3]) for match in one}) == 1
            assert [int(match[4]) for match in one] == list(range(1, 16))


def test_a_bad_source_is_a_usage_error(proxied: Dokuen) -> None:  # noqa: F811
    result = proxied.ctl("logs", "--source", "nginx", check=False)
    assert result.returncode == 2
    assert "'nginx' is not one of 'app', 'dokuen', 'router'" in result.stderr


def test_the_dyno_is_the_web_process_that_answered(
    proxied: Dokuen,  # noqa: F811
    apps_dir: Path,
) -> None:
    port = http_port(proxied)
    proxied.deploy("blog", write_app(apps_dir / "blog", WEB))
    proxied.ctl("ps:scale", "blog", "web=2")
    wait_for(lambda: proxied.running("blog", 2), "two web processes")
    answered: dict[str, str] = {}  # path -> the DYNO of the process that answered it

    def both() -> bool:
        path = f"/which/{len(answered)}"
        status, body = get(port, "blog.localhost", path)
        if status == 200:
            answered[path] = json.loads(body)["DYNO"]
        return set(answered.values()) == {"web.1", "web.2"}

    wait_for(both, "answers from web.1 and web.2")
    for path, dyno in answered.items():
        assert f" dyno={dyno} " in line_with(proxied, f'path="{path}"', "blog")


def test_nginx_own_502_is_an_h13_router_error(tmp_path: Path, apps_dir: Path) -> None:
    """A web process that accepts connections and closes them without a word."""
    rude = "import os, socket\ns = socket.create_server(('127.0.0.1', int(os.environ['PORT'])))\n"
    rude += "while True:\n    s.accept()[0].close()\n"
    with nginx_dokuen(tmp_path / "home") as daemon:
        port = http_port(daemon)
        daemon.deploy(
            "rude", write_app(apps_dir / "rude", "web: python3 rude.py\n", {"rude.py": rude})
        )
        assert get(port, "rude.localhost", "/x")[0] == 502
        line = line_with(daemon, 'path="/x"', "rude")
        assert ' rude[router]: at=error code=H13 desc="Connection closed without response" ' in line
        assert " dyno=web.1 " in line
        assert " status=502 " in line


class Client:
    """Requests ``PREFIX/N`` one after another in a thread until stopped; the paths that
    were answered 200 (a request refused while nginx restarts is tried no more)."""

    def __init__(self, port: int, prefix: str) -> None:
        self.port, self.prefix, self.answered = port, prefix, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            path = f"{self.prefix}/{n}"
            n += 1
            with contextlib.suppress(OSError):
                if get(self.port, "blog.localhost", path)[0] == 200:
                    self.answered.append(path)

    def stop(self, at_least: int = 20) -> list[str]:
        wait_for(lambda: len(self.answered) >= at_least, f"{at_least} answers")
        self._stop.set()
        self._thread.join()
        return list(self.answered)


def paths_shown(daemon: Dokuen, prefix: str) -> list[str]:
    return [
        line.split('path="', 1)[1].split('"', 1)[0]
        for line in router_lines(daemon, "blog", last=100_000)
        if f'path="{prefix}/' in line
    ]


def each_once(daemon: Dokuen, answered: list[str], prefix: str) -> list[str]:
    """Wait until every answered request has its line; the lines of ``prefix``."""
    wait_for(lambda: set(answered) <= set(paths_shown(daemon, prefix)), f"every {prefix} line")
    return paths_shown(daemon, prefix)


def test_no_router_line_is_lost_across_a_frozen_reexeced_or_killed_dokuend_or_nginx_restarts(
    proxied: Dokuen,  # noqa: F811
    apps_dir: Path,
) -> None:
    """nginx never waits for dokuend: the lines wait in the access log. A frozen dokuend
    (SIGSTOP), a re-exec (daemon:reload), nginx reloaded (SIGHUP) or restarted (its master
    stopped: dokuend starts another on the same file): every line once. A ``kill -9``: every
    line at least once, at most the last turn's twice."""
    port = http_port(proxied)
    proxied.deploy("blog", write_app(apps_dir / "blog", WEB))
    wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
    router = proxied.home / "nginx" / "router"
    assert stat.S_IMODE(router.stat().st_mode) == 0o700  # apps reach nothing in it
    assert proxied.process is not None
    count = 600
    proxied.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(lambda n: get(port, "blog.localhost", f"/frozen/{n}")[0], range(count))
            )
        elapsed = time.monotonic() - started
    finally:
        proxied.process.send_signal(signal.SIGCONT)
    assert statuses == [200] * count
    assert elapsed < 20, f"{count} requests took {elapsed:.1f}s while dokuend was frozen"
    frozen = each_once(proxied, [f"/frozen/{n}" for n in range(count)], "/frozen")
    assert sorted(frozen) == sorted(f"/frozen/{n}" for n in range(count))

    client = Client(port, "/reload")
    wait_for(lambda: len(client.answered) > 10, "requests")
    proxied.ctl("daemon:reload", "--timeout", "60")
    master = json.loads(proxied.ctl("status", "--json").stdout)["nginx"]["pid"]
    psutil.Process(master).send_signal(signal.SIGHUP)
    wait_for(lambda: len(client.answered) > 60, "requests after the reloads")
    psutil.Process(master).send_signal(signal.SIGTERM)  # its workers write what they hold
    wait_for(
        lambda: (
            json.loads(proxied.ctl("status", "--json").stdout)["nginx"]["pid"] not in (None, master)
        ),
        "a new nginx master",
    )
    answered = client.stop(len(client.answered) + 20)
    shown = each_once(proxied, answered, "/reload")
    assert len(shown) == len(set(shown)), "a line doubled"

    client = Client(port, "/killed")
    wait_for(lambda: len(client.answered) > 10, "requests")
    proxied.process.send_signal(signal.SIGKILL)
    proxied.process.wait()
    proxied.process = None
    wait_for(lambda: len(client.answered) > 40, "requests while no dokuend runs")
    proxied.start()
    answered = client.stop(len(client.answered) + 20)
    shown = each_once(proxied, answered, "/killed")
    doubled = len(shown) - len(set(shown))
    print(f"kill -9: {doubled} of {len(set(shown))} lines doubled")  # docs/benchmarks.md
    assert doubled <= 60, f"{doubled} lines doubled"
    status = json.loads(proxied.ctl("status", "--json").stdout)["nginx"]["router"]
    assert status["unparsed"] == status["unsent"] == 0


def test_maintenance_answers_503_keeps_the_processes_and_outlives_a_restart(
    tmp_path: Path, apps_dir: Path
) -> None:
    home = tmp_path / "home"
    with nginx_dokuen(home) as daemon:
        port = http_port(daemon)
        daemon.deploy("blog", write_app(apps_dir / "blog", WEB))
        wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
        pids = [row["pid"] for row in daemon.ps("blog")]
        assert daemon.ctl("maintenance", "blog").stdout == "off\n"
        result = daemon.ctl("maintenance:on", "blog")
        assert result.stdout == "Enabling maintenance mode for blog... done\n"
        status, body = get(port, "blog.localhost", "/anything")
        assert status == 503
        assert "<h1>blog is offline for maintenance</h1>" in body
        assert [row["pid"] for row in daemon.ps("blog")] == pids
        assert all(psutil.pid_exists(pid) for pid in pids)
        assert daemon.ctl("maintenance", "blog").stdout == "on\n"
        line = line_with(daemon, 'path="/anything"', "blog")
        assert ' blog[router]: at=info code=H80 desc="Maintenance mode" ' in line
        assert " dyno= connect= service= status=503 " in line
        assert "blog[dokuen]: maintenance mode on" in daemon.log()
        listing = json.loads(daemon.ctl("apps", "--json").stdout)
        assert listing[0]["maintenance"] is True
        assert ", maintenance" in daemon.ctl("apps").stdout
        assert "(maintenance mode: 503)" in daemon.ctl("status").stdout
        assert (home / "apps/blog/maintenance").exists()
    with nginx_dokuen(home) as daemon:
        port = http_port(daemon)
        wait_for(lambda: daemon.running("blog", 1), "blog restored")
        # nginx's first map after a restart has every app already (no 404 window).
        status, body = get(port, "blog.localhost")
        assert status == 503
        assert "<h1>blog is offline for maintenance</h1>" in body
        daemon.ctl("maintenance:off", "blog")
        assert env_via(port, "blog.localhost") is not None
        assert daemon.ctl("maintenance", "blog").stdout == "off\n"


def test_maintenance_that_nginx_t_refuses_is_not_kept(tmp_path: Path, apps_dir: Path) -> None:
    wrapper, refuse = refusing_nginx(tmp_path)
    with nginx_dokuen(tmp_path / "home", DOKUEN_NGINX_BINARY=wrapper) as daemon:
        port = http_port(daemon)
        daemon.deploy("blog", write_app(apps_dir / "blog", WEB))
        wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
        refuse.touch()
        result = daemon.ctl("maintenance:on", "blog", check=False)
        assert result.returncode == 1
        assert "nginx -t refused the new config" in result.stderr
        assert daemon.ctl("maintenance", "blog").stdout == "off\n"
        assert not (daemon.home / "apps/blog/maintenance").exists()
        assert env_via(port, "blog.localhost") is not None
        refuse.unlink()
        daemon.ctl("maintenance:on", "blog")
        assert get(port, "blog.localhost")[0] == 503


def test_maintenance_needs_nginx_and_an_app_that_exists(dokuen: Dokuen) -> None:
    dokuen.ctl("apps:create", "blog")
    result = dokuen.ctl("maintenance:on", "blog", check=False)
    assert result.returncode == 1
    assert "maintenance mode needs nginx" in result.stderr
    assert "DOKUEN_NGINX=managed" in result.stderr
    missing = dokuen.ctl("maintenance:on", "nope", check=False)
    assert missing.returncode == 1
    assert "no app 'nope'" in missing.stderr or "nope" in missing.stderr
    assert dokuen.ctl("maintenance:on", "Bad_Name", check=False).returncode == 2


def test_an_adopted_nginx_with_an_older_log_format_is_reloaded_with_today_s(
    tmp_path: Path, apps_dir: Path
) -> None:
    """A dokuend of another version (killed, or re-executed into this one) left nginx
    running with the log format it had: the next dokuend adopts the master and reloads it
    (adopting the apps is a change nginx shows), so the requests after it are router lines
    again."""
    with nginx_dokuen(tmp_path / "home") as daemon:
        port = http_port(daemon)
        daemon.deploy("blog", write_app(apps_dir / "blog", WEB))
        wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
        master = psutil.Process(json.loads(daemon.ctl("status", "--json").stdout)["nginx"]["pid"])
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait()
        daemon.process = None
        config = daemon.home / "nginx" / "apps" / "blog.conf"
        older = 'log_format dokuen_router_blog escape=json \'{"app":"blog"}\''
        config.write_text(
            re.sub(r"log_format dokuen_router_blog escape=json '[^']*'", older, config.read_text())
        )
        workers = {child.pid for child in master.children()}
        master.send_signal(signal.SIGHUP)  # it logs as the older dokuend had it log
        wait_for(
            lambda: live_children(master).isdisjoint(workers),
            "nginx's new workers",
        )
        daemon.start()
        assert json.loads(daemon.ctl("status", "--json").stdout)["nginx"]["pid"] == master.pid
        wait_for(lambda: "nginx[dokuen]: reloaded" in daemon.log(), "the reload")
        assert get(port, "blog.localhost", "/after-upgrade")[0] == 200
        line_with(daemon, 'path="/after-upgrade"', "blog")


def live_children(process: psutil.Process) -> set[int]:
    """The pids of ``process``'s children that are not zombies (one may end as it is read)."""
    found = set()
    for child in process.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.status() != psutil.STATUS_ZOMBIE:
                found.add(child.pid)
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")
def test_a_full_disk_under_the_router_log_never_stops_nginx(tmp_path: Path, apps_dir: Path) -> None:
    """The router log's file system full (a 256 KiB tmpfs, dokuend frozen so nothing read is
    given back): nginx answers every request all the same, says it could not write (counted
    as ``unsent``), and the lines are back once dokuend has read and punched the file."""
    router = tmp_path / "home" / "nginx" / "router"
    router.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(router)], check=True)
    try:
        with nginx_dokuen(tmp_path / "home") as daemon:
            port = http_port(daemon)
            daemon.deploy("blog", write_app(apps_dir / "blog", WEB))
            wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
            assert daemon.process is not None
            count = 3000  # about 600 KiB of lines
            daemon.process.send_signal(signal.SIGSTOP)
            try:
                with concurrent.futures.ThreadPoolExecutor(8) as pool:
                    statuses = list(
                        pool.map(
                            lambda n: get(port, "blog.localhost", f"/full/{n}")[0], range(count)
                        )
                    )
            finally:
                daemon.process.send_signal(signal.SIGCONT)
            assert statuses == [200] * count
            wait_for(lambda: len(paths_shown(daemon, "/full")) > 500, "the lines that fitted")
            shown = paths_shown(daemon, "/full")
            assert len(shown) == len(set(shown))
            router_status = json.loads(daemon.ctl("status", "--json").stdout)["nginx"]["router"]
            assert router_status["unsent"] >= 1  # nginx's alerts (not one a line: see docs)
            assert re.search(
                r", [1-9]\d* write failures reported by nginx", daemon.ctl("status").stdout
            )

            def after() -> bool:
                get(port, "blog.localhost", "/after/1")
                return bool(paths_shown(daemon, "/after"))

            wait_for(after, "router lines again once the file was read")
    finally:
        subprocess.run(["umount", "-l", str(router)], check=False)
