"""The supervisor's promises, end to end: real processes under the installed dokuend."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from tests.e2e.conftest import (
    BIN,
    Dokuen,
    get_json,
    leftover_processes,
    wait_for,
    write_app,
)

WEB = "web: python3 envserver.py\n"


def test_deploy_runs_every_type_with_exactly_its_environment(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    source = write_app(
        apps_dir / "blog",
        WEB + "worker: exec sleep 1000\n",
        {".env": "GREETING=from-dotenv\nOVERRIDDEN=dotenv\n"},
    )
    dokuen.ctl("apps:create", "blog")
    dokuen.ctl("config:set", "blog", "OVERRIDDEN=config", "SECRET=s3")
    deploy = dokuen.ctl("deploy", "blog", str(source))
    assert "-----> Released v1" in deploy.stdout
    rows = wait_for(lambda: dokuen.running("blog", 2), "web.1 and worker.1 running")
    assert [row["name"] for row in rows] == ["web.1", "worker.1"]
    assert len({row["port"] for row in rows}) == 2
    web = rows[0]
    env = wait_for(lambda: _try_get(web["port"]), "web.1 to answer")
    release = dokuen.home / "apps" / "blog" / "releases" / "v1"
    assert env["PORT"] == str(web["port"])
    assert env["DYNO"] == env["PS"] == "web.1"
    assert env["APP"] == "blog"
    assert env["HOME"] == str(dokuen.home / "apps" / "blog" / "data")
    assert env["GREETING"] == "from-dotenv"
    assert env["OVERRIDDEN"] == "config"
    assert env["SECRET"] == "s3"
    assert "CANARY_FROM_THE_DAEMON" not in env
    assert "DOKUEN_HOME" not in env
    # A copy: editing the source after the deploy changes nothing that runs.
    (source / "envserver.py").write_text("raise SystemExit(3)\n")
    assert (release / "envserver.py").read_text() != "raise SystemExit(3)\n"


def _try_get(port: int) -> dict[str, str] | None:
    try:
        result: dict[str, str] = get_json(port)
    except OSError:
        return None
    return result


def test_scale_up_and_down(dokuen: Dokuen, apps_dir: Path) -> None:
    dokuen.deploy("blog", write_app(apps_dir / "blog", WEB))
    wait_for(lambda: dokuen.running("blog", 1), "web.1")
    assert dokuen.ctl("ps:scale", "blog", "web=3").stdout.strip() == "blog: web=3"
    rows = wait_for(lambda: dokuen.running("blog", 3), "three web processes")
    for row in rows:
        port: int = row["port"]
        env = wait_for(lambda: _try_get(port), f"{row['name']} to answer")  # noqa: B023
        assert env["DYNO"] == row["name"]
    survivor = rows[0]["pid"]
    dokuen.ctl("ps:scale", "blog", "web=1")
    rows = wait_for(lambda: dokuen.running("blog", 1), "one web process")
    assert rows[0]["pid"] == survivor
    assert not any(psutil.pid_exists(row["pid"]) for row in rows[1:])


def test_ps_and_scale_keep_the_procfiles_order(dokuen: Dokuen, apps_dir: Path) -> None:
    procfile = "worker: exec sleep 1000\n" + WEB + "clock: exec sleep 1000\n"
    dokuen.deploy("blog", write_app(apps_dir / "blog", procfile))
    wait_for(lambda: dokuen.running("blog", 3), "every type running")
    assert dokuen.ctl("ps:scale", "blog").stdout.strip() == "blog: worker=1 web=1 clock=1"
    shown = dokuen.ctl("ps:scale", "blog", "web+1", "clock=0").stdout.strip()
    assert shown == "blog: worker=1 web=2 clock=0"
    rows = wait_for(lambda: dokuen.running("blog", 3), "web.2 running")
    assert [row["name"] for row in rows] == ["worker.1", "web.1", "web.2"]
    table = [line.split() for line in dokuen.ctl("ps", "blog").stdout.splitlines()[1:]]
    assert [row[1] for row in table if row[0] == "blog"] == ["worker.1", "web.1", "web.2"]
    assert dokuen.ctl("ps:scale", "blog", "web-1").stdout.strip() == "blog: worker=1 web=1 clock=0"
    too_far = dokuen.ctl("ps:scale", "blog", "web-2", check=False)
    assert too_far.returncode == 2
    assert "'web' would have -1 processes" in too_far.stderr
    releases = json.loads(dokuen.ctl("releases", "blog", "--json").stdout)
    assert releases[0]["process_types"] == ["worker", "web", "clock"]


def test_kill_9_brings_the_process_back_on_its_port(dokuen: Dokuen, apps_dir: Path) -> None:
    dokuen.deploy("blog", write_app(apps_dir / "blog", WEB))
    (before,) = wait_for(lambda: dokuen.running("blog", 1), "web.1")
    os.kill(before["pid"], signal.SIGKILL)
    (after,) = wait_for(
        lambda: [r for r in dokuen.ps("blog") if r["pid"] != before["pid"] and r["pid"]],
        "a new web.1",
    )
    assert after["port"] == before["port"]
    assert after["restarts"] == 1
    assert "blog[dokuen]: web.1 killed by SIGKILL, restarting in" in dokuen.log()
    wait_for(lambda: _try_get(after["port"]), "the new web.1 to answer")


def test_a_crash_loop_backs_off_then_stays_crashed(dokuen: Dokuen, apps_dir: Path) -> None:
    dokuen.ctl("apps:create", "flaky")
    dokuen.ctl("config:set", "flaky", "DOKUEN_RESTART_LIMIT=4")
    dokuen.ctl("deploy", "flaky", str(write_app(apps_dir / "flaky", "web: echo boom; exit 3\n")))
    wait_for(lambda: dokuen.ps("flaky")[0]["state"] == "crashed", "web.1 to be crashed")
    log = dokuen.log()
    delays = [line.rsplit(" ", 1)[-1] for line in log.splitlines() if "restarting in" in line]
    assert delays == ["0.1s", "0.2s", "0.4s"]
    assert "web.1 exited with code 3; crashed after 4 fast failures in a row" in log
    assert log.count("flaky[web.1]: boom") == 4
    assert "crashed" in dokuen.ctl("ps", "flaky").stdout
    # It stays down, costing nothing, until asked.
    time.sleep(0.5)
    assert log.count("flaky[web.1]: boom") == dokuen.log().count("flaky[web.1]: boom")
    dokuen.ctl("restart", "flaky")
    wait_for(lambda: dokuen.log().count("flaky[web.1]: boom") > 4, "a fresh attempt")


def test_a_config_change_reaches_the_restarted_process(dokuen: Dokuen, apps_dir: Path) -> None:
    dokuen.deploy("blog", write_app(apps_dir / "blog", WEB))
    (before,) = wait_for(lambda: dokuen.running("blog", 1), "web.1")
    dokuen.ctl("config:set", "blog", "GREETING=hello world", "EMPTY=")
    (after,) = wait_for(
        lambda: [r for r in (dokuen.running("blog", 1) or []) if r["pid"] != before["pid"]],
        "web.1 restarted",
    )
    env = wait_for(lambda: _try_get(after["port"]), "web.1 to answer")
    assert env["GREETING"] == "hello world"
    assert env["EMPTY"] == ""
    assert dokuen.ctl("config:get", "blog", "GREETING").stdout == "hello world\n"
    assert (dokuen.home / "apps/blog/env/GREETING").read_text() == "hello world"
    dokuen.ctl("config:unset", "blog", "GREETING")
    assert "GREETING" not in dokuen.ctl("config", "blog").stdout


def test_logs_tail_filter_and_follow(dokuen: Dokuen, apps_dir: Path) -> None:
    counter = """
        import itertools, time
        for i in itertools.count():
            print("tick", i, flush=True)
            time.sleep(0.05)
    """
    source = write_app(
        apps_dir / "blog",
        "worker: python3 counter.py\nclock: exec sleep 1000\n",
        {"counter.py": counter},
    )
    dokuen.deploy("blog", source)
    wait_for(lambda: "blog[worker.1]: tick 5" in dokuen.log(), "six ticks")
    tail = dokuen.ctl("logs", "blog", "-n", "3", "--ps", "worker").stdout.splitlines()
    assert len(tail) == 3
    assert all(" blog[worker.1]: tick " in line for line in tail)
    numbers = [int(line.rsplit(" ", 1)[1]) for line in tail]
    assert numbers == list(range(numbers[0], numbers[0] + 3))
    everything = dokuen.ctl("logs", "-n", "1000").stdout
    assert "blog[dokuen]: worker.1 started" in everything
    with subprocess.Popen(
        [str(BIN / "dokuenctl"), "logs", "blog", "-f", "-n", "0", "--ps", "worker.1"],
        env=dokuen.env,
        stdout=subprocess.PIPE,
        text=True,
    ) as follower:
        assert follower.stdout is not None
        lines = [follower.stdout.readline() for _ in range(3)]
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 0
    seen = [int(line.rsplit(" ", 1)[1]) for line in lines]
    assert seen == list(range(seen[0], seen[0] + 3))
    assert seen[0] > numbers[2]


def test_a_stop_leaves_no_grandchild_behind(dokuen: Dokuen, apps_dir: Path) -> None:
    marker = f"{os.getpid() % 1000 + 7000}"
    script = (
        "trap '' TERM\n"
        f"sleep 1{marker} &\n"  # a grandchild in the group
        f"setsid sleep 2{marker} &\n"  # one that left the group
        f"sh -c 'trap \"\" TERM; exec sleep 3{marker}' &\n"  # one that ignores SIGTERM too
        "wait\n"
    )
    dokuen.ctl("apps:create", "tree")
    dokuen.ctl("config:set", "tree", "DOKUEN_STOP_TIMEOUT=1")
    dokuen.ctl(
        "deploy",
        "tree",
        str(write_app(apps_dir / "tree", "web: exec sh tree.sh\n", {"tree.sh": script})),
    )
    wait_for(lambda: len(leftover_processes(marker)) == 3, "the three sleeps")
    started = time.monotonic()
    dokuen.ctl("stop", "tree")
    took = time.monotonic() - started
    assert leftover_processes(marker) == []
    assert dokuen.ps("tree") == []
    assert took < 10
    assert "web.1 did not stop within 1s of SIGTERM, sent SIGKILL" in dokuen.log()


def test_sigterm_stops_everything_and_a_restart_restores_the_formation(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    dokuen.deploy("blog", write_app(apps_dir / "blog", WEB + "worker: exec sleep 1000\n"))
    dokuen.ctl("ps:scale", "blog", "web=2")
    dokuen.deploy("paused", write_app(apps_dir / "paused", "web: exec sleep 1000\n"))
    dokuen.ctl("stop", "paused")
    rows = wait_for(lambda: dokuen.running("blog", 3), "web=2 worker=1")
    assert dokuen.terminate() == 0
    assert not any(psutil.pid_exists(row["pid"]) for row in rows)
    assert not dokuen.home.joinpath("dokuend.sock").exists()
    dokuen.start()
    restored = wait_for(lambda: dokuen.running("blog", 3), "the formation to come back")
    assert [row["name"] for row in restored] == ["web.1", "web.2", "worker.1"]
    assert dokuen.ps("paused") == []
    assert {row["port"] for row in restored} == {row["port"] for row in rows}


def test_200000_lines_from_one_process_all_arrive_in_order(dokuen: Dokuen, apps_dir: Path) -> None:
    writer = (
        "import sys\n"
        "out = sys.stdout\n"
        "for i in range(200000):\n"
        "    out.write(f'line {i:06d} ' + 'x' * 80 + '\\n')\n"
        "out.flush()\n"
        "import time; time.sleep(1000)\n"
    )
    dokuen.deploy(
        "flood", write_app(apps_dir / "flood", "web: python3 writer.py\n", {"writer.py": writer})
    )
    wait_for(lambda: "line 199999" in dokuen.log(), "the last line", timeout=60)
    lines = [line for line in dokuen.log().splitlines() if " flood[web.1]: " in line]
    assert len(lines) == 200000
    expected_tail = " " + "x" * 80
    for number, line in enumerate(lines):
        message = line.split(" flood[web.1]: ", 1)[1]
        assert message == f"line {number:06d}{expected_tail}", line


def test_output_without_newlines_is_cut_into_marked_pieces(dokuen: Dokuen, apps_dir: Path) -> None:
    flood = (
        "import sys, time\nsys.stdout.write('y' * 300000)\nsys.stdout.flush()\ntime.sleep(1000)\n"
    )
    dokuen.deploy(
        "nolines", write_app(apps_dir / "nolines", "web: python3 flood.py\n", {"flood.py": flood})
    )
    wait_for(
        lambda: (
            sum(x.count("y") for x in dokuen.log().splitlines() if "nolines[web.1]" in x) == 300000
        ),
        "all 300000 bytes",
    )
    pieces = [line for line in dokuen.log().splitlines() if "nolines[web.1]: " in line]
    assert len(pieces) == 5
    for piece in pieces:
        message = piece.split("nolines[web.1]: ", 1)[1]
        text = message.removeprefix("[continued] ").removesuffix(" [line continues]")
        assert set(text) == {"y"}
        assert len(message.encode()) <= 64 * 1024 + 40
    assert pieces[0].endswith(" [line continues]")
    assert "[continued] " in pieces[-1]
    assert not pieces[-1].endswith("[line continues]")
    assert dokuen.ctl("status").returncode == 0


def test_releases_and_rollback_without_a_build(dokuen: Dokuen, apps_dir: Path) -> None:
    source = write_app(apps_dir / "blog", WEB)
    dokuen.deploy("blog", source)
    (source / "Procfile").write_text(WEB + "worker: exec sleep 1000\n")
    dokuen.deploy("blog", source)
    wait_for(lambda: dokuen.running("blog", 2), "v2: web and worker")
    listing = json.loads(dokuen.ctl("releases", "blog", "--json").stdout)
    assert [(r["version"], r["current"]) for r in listing] == [("v2", True), ("v1", False)]
    assert "v2       " in dokuen.ctl("releases", "blog").stdout
    result = dokuen.ctl("rollback", "blog")
    assert "-----> Rolled back to v1" in result.stdout
    (row,) = wait_for(lambda: dokuen.running("blog", 1), "v1: web only")
    env = wait_for(lambda: _try_get(row["port"]), "v1 to answer")
    assert Path(env["PWD"]).name == "v1"  # the release it runs in
    assert sorted(p.name for p in (dokuen.home / "apps/blog/releases").iterdir()) == [
        "v1",
        "v1.json",
        "v1.log",
        "v2",
        "v2.json",
        "v2.log",
    ]
    missing = dokuen.ctl("rollback", "blog", "v9", check=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: no release named 'v9'")
    same = dokuen.ctl("rollback", "blog", "v1", check=False)
    assert same.returncode == 1
    assert "v1 is already the current release of blog" in same.stderr
    dokuen.ctl("rollback", "blog", "v2")
    wait_for(lambda: dokuen.running("blog", 2), "v2 again")


def test_run_a_one_off_command_in_the_release(dokuen: Dokuen, apps_dir: Path) -> None:
    dokuen.ctl("apps:create", "blog")
    dokuen.ctl("config:set", "blog", "GREETING=hi")
    dokuen.ctl("deploy", "blog", str(write_app(apps_dir / "blog", WEB, {"data.txt": "42\n"})))
    result = dokuen.ctl("run", "blog", "echo $GREETING $DYNO; cat data.txt; exit 7", check=False)
    assert result.returncode == 7
    assert result.stdout == "hi run.1\n42\n"
    assert dokuen.ctl("run", "blog", "python3", "-c", "print('a b')").stdout == "a b\n"
    killed = dokuen.ctl("run", "blog", "kill -TERM $$", check=False)
    assert killed.returncode == 128 + signal.SIGTERM
    assert "blog[dokuen]: run.1 exited with code 7" in dokuen.log()
    assert dokuen.ctl("run", "nope", "true", check=False).returncode == 1


def test_run_of_a_procfile_type_runs_its_command_with_the_arguments(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    procfile = WEB + "greet: echo hello from $DYNO\n"
    dokuen.deploy("blog", write_app(apps_dir / "blog", procfile))
    assert dokuen.ctl("run", "blog", "greet").stdout == "hello from run.1\n"
    assert dokuen.ctl("run", "blog", "greet", "and", "more words").stdout == (
        "hello from run.2 and more words\n"
    )
    assert dokuen.ctl("open", "blog").stdout.startswith("http://")
    assert dokuen.ctl("ps:restart", "blog", "web").stdout.startswith("restarted blog: web.1")


def test_a_one_off_command_dies_with_its_requester(dokuen: Dokuen, apps_dir: Path) -> None:
    dokuen.deploy("blog", write_app(apps_dir / "blog", WEB))
    marker = f"{os.getpid() % 1000 + 3000}"
    with subprocess.Popen(
        [str(BIN / "dokuenctl"), "run", "blog", f"sleep 4{marker}"],
        env=dokuen.env,
        stdout=subprocess.DEVNULL,
    ) as client:
        wait_for(lambda: leftover_processes(f"sleep 4{marker}"), "the one-off process")
        client.kill()
    wait_for(lambda: not leftover_processes(f"sleep 4{marker}"), "the one-off process to go")


def test_the_release_command_runs_once_before_the_new_processes(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    good = write_app(apps_dir / "good", "release: echo migrating; touch migrated\n" + WEB)
    result = dokuen.deploy("blog", good)
    assert "-----> Running release command: echo migrating; touch migrated" in result.stdout
    assert "       migrating" in result.stdout
    (row,) = wait_for(lambda: dokuen.running("blog", 1), "web.1, and no release process")
    assert row["name"] == "web.1"
    assert (dokuen.home / "apps/blog/releases/v1/migrated").exists()
    bad = write_app(apps_dir / "bad", "release: echo cannot migrate; exit 3\n" + WEB)
    failed = dokuen.ctl("deploy", "blog", str(bad), check=False)
    assert failed.returncode == 1
    assert "the release command of v2 exited with code 3" in failed.stderr
    assert "       cannot migrate" in failed.stdout
    assert dokuen.ps("blog")[0]["pid"] == row["pid"]  # v1 never stopped
    assert [r["version"] for r in json.loads(dokuen.ctl("releases", "blog", "--json").stdout)] == [
        "v1"
    ]


def test_apps_info_and_releases_info_show_the_whole_app(dokuen: Dokuen, apps_dir: Path) -> None:
    dokuen.ctl("apps:create", "blog")
    fresh = json.loads(dokuen.ctl("apps:info", "blog", "--json").stdout)
    assert fresh["release"] is None
    assert fresh["database"] is False
    dokuen.deploy("blog", write_app(apps_dir / "blog", WEB + "worker: exec sleep 1000\n"))
    wait_for(lambda: dokuen.running("blog", 2), "blog running")
    dokuen.ctl("domains:add", "blog", "blog.example.com")
    info = json.loads(dokuen.ctl("apps:info", "blog", "--json").stdout)
    assert info["release"] == "v1"
    assert info["formation"] == {"web": 1, "worker": 1}
    assert info["domains"][1:] == ["blog.example.com"]
    assert info["repo"] == str(dokuen.home / "apps/blog/repo.git")
    assert info["disk_bytes"] > 0
    shown = dokuen.ctl("apps:info", "blog").stdout.splitlines()
    assert shown[0] == "=== blog"
    assert "formation  web=1 worker=1" in shown
    assert "processes  2/2 running" in shown
    release = json.loads(dokuen.ctl("releases:info", "blog", "v1", "--json").stdout)
    assert release["current"] is True
    assert release["process_types"] == {"web": "python3 envserver.py", "worker": "exec sleep 1000"}
    text = dokuen.ctl("releases:info", "blog", "v1").stdout.splitlines()
    assert text[0] == "=== blog v1 (current)"
    assert "worker:     exec sleep 1000" in text
    missing = dokuen.ctl("releases:info", "blog", "v9", check=False)
    assert missing.returncode == 1
    assert "no release named 'v9'" in missing.stderr
