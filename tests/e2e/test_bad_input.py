"""Bad input gets one clear error, the right exit code, and what was running keeps running."""

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, Dokuen, running_dokuen, wait_for, write_app


def deploy_blog(dokuen: Dokuen, apps_dir: Path) -> int:
    """The app 'blog' running v1; returns web.1's pid."""
    dokuen.deploy("blog", write_app(apps_dir / "blog", "web: exec sleep 1000\n"))
    (row,) = wait_for(lambda: dokuen.running("blog", 1), "web.1")
    pid: int = row["pid"]
    return pid


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dokuen]:
    """One dokuend for the tests whose input is refused: a refusal leaves everything as it
    was (each of them checks it), so they can all be refused by the same daemon."""
    with running_dokuen(tmp_path_factory.mktemp("bad-input") / "home") as shared:
        yield shared


@pytest.fixture(scope="module")
def serving(daemon: Dokuen) -> int:
    """'blog' running v1 on the shared daemon; returns web.1's pid."""
    return deploy_blog(daemon, daemon.home.parent / "src")


@pytest.fixture
def own_blog(dokuen: Dokuen, apps_dir: Path) -> int:
    """'blog' running v1 on a daemon of the test's own (for the tests that change it)."""
    return deploy_blog(dokuen, apps_dir)


def still_serving(dokuen: Dokuen, pid: int) -> None:
    (row,) = dokuen.ps("blog")
    assert (row["pid"], row["state"]) == (pid, "running")
    releases = sorted(p.name for p in (dokuen.home / "apps/blog/releases").iterdir())
    assert releases == ["v1", "v1.json", "v1.log"]


@pytest.mark.parametrize(
    ("procfile", "message"),
    [
        (
            "web: exec sleep 1000\nthis is not a process line\n",
            "Procfile:2: expected 'TYPE: COMMAND'",
        ),
        ("web worker: ./run\n", "Procfile:1: invalid process type 'web worker'"),
        ("web: a\nweb: b\n", "Procfile:2: duplicate process type 'web'"),
        ("web:\n", "Procfile:1: process type 'web' has an empty command"),
        ("# nothing here\n", "no process types"),
    ],
)
def test_a_bad_procfile_is_refused_and_the_release_keeps_running(
    daemon: Dokuen, apps_dir: Path, serving: int, procfile: str, message: str
) -> None:
    source = write_app(apps_dir / "bad", procfile)
    result = daemon.ctl("deploy", "blog", str(source), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    still_serving(daemon, serving)


def test_nothing_to_build_and_a_missing_directory(
    daemon: Dokuen, tmp_path: Path, serving: int
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = daemon.ctl("deploy", "blog", str(empty), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: no buildpack applies to this app. Tried: python")
    assert "procfile (a Procfile)" in result.stderr
    missing = daemon.ctl("deploy", "blog", str(tmp_path / "nowhere"), check=False)
    assert missing.returncode == 1
    assert "no directory" in missing.stderr
    still_serving(daemon, serving)


@pytest.mark.parametrize("name", ["../x", "Blog", "a b", "x" * 70, "blog\n", "-blog", ""])
def test_an_app_name_that_is_not_a_dns_label_never_touches_the_disk(
    daemon: Dokuen, serving: int, name: str
) -> None:
    result = daemon.ctl("apps:create", "--", name, check=False)
    assert result.returncode == 2
    assert "invalid app name" in result.stderr
    apps = daemon.home / "apps"
    assert [path.name for path in apps.iterdir()] == ["blog"]  # the one app there was
    assert not (daemon.home.parent / "x").exists()


def test_the_platforms_own_names_are_refused_for_new_apps(daemon: Dokuen) -> None:
    result = daemon.ctl("apps:create", "nginx", check=False)
    assert result.returncode == 2
    assert "app name 'nginx' is reserved for the platform" in result.stderr
    reply = raw_request(daemon, {"command": "apps:create", "args": {"app": "www"}})
    assert "app name 'www' is reserved for the platform" in str(reply[0]["error"])
    assert not (daemon.home / "apps" / "www").exists()


def test_a_bad_app_name_sent_straight_to_the_socket_is_refused_too(daemon: Dokuen) -> None:
    reply = raw_request(daemon, {"command": "apps:create", "args": {"app": "../../etc"}})
    assert reply == [{"ok": False, "error": reply[0]["error"], "usage": True}]
    assert "invalid app name '../../etc'" in str(reply[0]["error"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch=1"], "unknown process type 'nosuch' (the Procfile has: web)"),
        (["web=-1"], "invalid count '-1'"),
        (["web=lots"], "invalid count 'lots'"),
        (["web"], "invalid scale 'web' (use TYPE=N"),
    ],
)
def test_a_bad_scale_is_refused(
    daemon: Dokuen, serving: int, args: list[str], message: str
) -> None:
    result = daemon.ctl("ps:scale", "blog", *args, check=False)
    assert result.returncode == 2  # a usage error, though only dokuend can tell
    assert message in result.stderr
    still_serving(daemon, serving)


@pytest.mark.parametrize("pair", ["1ABC=x", "A-B=x", "A B=x", "=x", "NOEQUALS"])
def test_a_bad_config_key_is_refused(daemon: Dokuen, serving: int, pair: str) -> None:
    result = daemon.ctl("config:set", "blog", pair, check=False)
    assert result.returncode == 2
    assert "KEY=VALUE" in result.stderr
    assert daemon.ctl("config", "blog").stdout == ""
    still_serving(daemon, serving)


def test_port_is_refused_as_a_config_key_with_the_reason(daemon: Dokuen, serving: int) -> None:
    result = daemon.ctl("config:set", "blog", "PORT=5000", check=False)
    assert result.returncode == 2
    assert "config var PORT cannot be set: dokuend gives each process a port" in result.stderr
    reply = raw_request(
        daemon, {"command": "config:set", "args": {"app": "blog", "values": {"DYNO": "x"}}}
    )
    assert "config var DYNO cannot be set" in str(reply[-1]["error"])
    assert daemon.ctl("config", "blog").stdout == ""
    still_serving(daemon, serving)


def test_config_set_says_whether_it_restarted_anything(dokuen: Dokuen, own_blog: int) -> None:
    restarted = dokuen.ctl("config:set", "blog", "A=1").stdout
    assert restarted == "set A on blog in release v2; its processes restarted\n"
    dokuen.ctl("stop", "blog")
    quiet = dokuen.ctl("config:unset", "blog", "A").stdout
    assert (
        quiet == "unset A on blog in release v3 (no process of blog runs now: its next deploy "
        "or start uses it)\n"
    )
    dokuen.ctl("apps:create", "fresh")
    fresh = dokuen.ctl("config:set", "fresh", "B=2").stdout
    assert fresh.startswith("set B on fresh (no process of fresh runs now")


@pytest.mark.parametrize(
    "command", [["config:get", "blog", "bad-key"], ["config:unset", "blog", "1BAD"]]
)
def test_a_bad_key_is_a_usage_error_everywhere(
    daemon: Dokuen, serving: int, command: list[str]
) -> None:
    result = daemon.ctl(*command, check=False)
    assert result.returncode == 2
    assert "invalid config key" in result.stderr


def test_never_two_processes_on_one_port(dokuen: Dokuen, apps_dir: Path) -> None:
    dokuen.terminate()
    dokuen.ports = (dokuen.ports[0], dokuen.ports[0] + 1)  # room for two processes
    dokuen.start()
    web = "web: exec sleep 1000\n"
    dokuen.deploy("pa", write_app(apps_dir / "pa", web))
    wait_for(lambda: dokuen.running("pa", 1), "pa")
    dokuen.ctl("restart", "pa")  # hands its port to its replacement
    dokuen.deploy("pb", write_app(apps_dir / "pb", web))
    wait_for(lambda: dokuen.running("pb", 1), "pb")
    third = dokuen.deploy_result("pc", write_app(apps_dir / "pc", web))
    assert third.returncode == 1
    assert f"no free port in {dokuen.ports[0]}-{dokuen.ports[1]}" in third.stderr
    ports = [row["port"] for row in dokuen.ps() if row["port"]]
    assert len(ports) == len(set(ports)) == 2


def test_a_hand_edited_bad_file_keeps_only_that_app_down(dokuen: Dokuen, apps_dir: Path) -> None:
    web = "web: exec sleep 1000\n"
    dokuen.deploy("good", write_app(apps_dir / "good", web))
    dokuen.deploy("bad", write_app(apps_dir / "bad", web))
    dokuen.terminate()
    (dokuen.home / "apps/bad/env/A=B").write_text("x")
    dokuen.start()
    wait_for(lambda: dokuen.running("good", 1), "the good app")
    assert dokuen.ps("bad") == []
    env = dokuen.home / "apps" / "bad" / "env"
    assert f"bad[dokuen]: broken, not restored: {env}: invalid config key 'A=B'" in dokuen.log()


def test_a_bad_app_option_is_refused_before_anything_restarts(daemon: Dokuen, serving: int) -> None:
    result = daemon.ctl("config:set", "blog", "DOKUEN_STOP_TIMEOUT=soon", check=False)
    assert result.returncode == 1
    assert "DOKUEN_STOP_TIMEOUT='soon' is not a number of seconds" in result.stderr
    still_serving(daemon, serving)


def test_an_unknown_app_suggests_the_near_one(daemon: Dokuen, serving: int) -> None:
    result = daemon.ctl("restart", "blgo", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: no app named 'blgo'; did you mean 'blog'?")


def test_destroy_needs_the_name_again(dokuen: Dokuen, own_blog: int) -> None:
    result = dokuen.ctl("apps:destroy", "blog", check=False)
    assert result.returncode == 2
    assert "--confirm blog" in result.stderr
    still_serving(dokuen, own_blog)
    dokuen.ctl("apps:destroy", "blog", "--confirm", "blog")
    assert not (dokuen.home / "apps" / "blog").exists()
    assert dokuen.ps() == []


def raw_request(
    dokuen: Dokuen, message: object, raw: bytes | None = None
) -> list[dict[str, object]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(dokuen.home / "dokuend.sock"))
        client.sendall(raw if raw is not None else json.dumps(message).encode() + b"\n")
        client.shutdown(socket.SHUT_WR)
        with client.makefile("rb") as replies:
            return [json.loads(line) for line in replies]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"this is not json\n", "request is not valid JSON"),
        (b'["ps"]\n', "request must be an object"),
        (b'{"command": "explode"}\n', "no command named 'explode'"),
        (b'{"command": "ps", "args": []}\n', "request 'args' must be an object"),
        (b'{"command": "ps:scale", "args": {"app": "blog", "changes": "web=2"}}\n', "list"),
        (b"no newline at all", "request must be one line of JSON"),
    ],
)
def test_a_bad_request_on_the_socket_gets_an_error_and_the_daemon_lives(
    daemon: Dokuen, serving: int, raw: bytes, message: str
) -> None:
    (reply,) = raw_request(daemon, None, raw)
    assert reply["ok"] is False
    assert message in str(reply["error"])
    still_serving(daemon, serving)


def test_when_dokuend_is_not_running_dokuenctl_says_how_to_start_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "dokuenctl"), "ps"],
        env={"DOKUEN_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"error: dokuend is not running (no answer on {tmp_path}/dokuend.sock); "
        "start it with: dokuend\n"
    )


def test_a_second_dokuend_on_the_same_home_refuses_to_start(daemon: Dokuen) -> None:
    result = subprocess.run(
        [str(BIN / "dokuend")],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert daemon.process is not None
    assert f"another dokuend (pid {daemon.process.pid}) runs on {daemon.home}" in result.stderr
    assert daemon.ctl("status").returncode == 0


def test_unknown_command_and_usage_errors_exit_2(daemon: Dokuen) -> None:
    assert daemon.ctl("frobnicate", check=False).returncode == 2
    assert daemon.ctl("ps:scale", check=False).returncode == 2
    assert daemon.ctl("logs", "--ps", "web.0", check=False).returncode == 2
