"""Switches are proven before they count (issue 13): a deploy's, a config change's or a
scale's new state is pending until its processes pass their health checks. Real dokuend,
real nginx, real processes; a real ``kill -9`` of dokuend in the middle of a check."""

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import BIN, Dokuen, wait_for, write_app
from tests.e2e.test_nginx import NGINX, env_via, http_port, nginx_dokuen

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (bin/setup installs it)"),
]

# The worker says which release it runs (from the slug's .env) when it starts.
EIO = "Input/output error (an input/output error: check the disk (dmesg))"
WORKER = 'worker: echo "worker of $TAG up"; exec sleep 1000\n'


def tagged(directory: Path, tag: str, web: str) -> Path:
    return write_app(directory, f"web: {web}\n{WORKER}", {".env": f"TAG={tag}\n"})


def listing(dokuen: Dokuen, app: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(dokuen.ctl("releases", app, "--json").stdout)
    return rows


def pids(dokuen: Dokuen, app: str) -> dict[str, int]:
    return {row["name"]: row["pid"] for row in dokuen.ps(app)}


def kill_dokuend_and_orphans(dokuen: Dokuen) -> None:
    """kill -9 dokuend, then end what it left running (its nginx, the app processes): the
    next dokuend then restores from the files alone (were they adopted, it would keep them)."""
    assert dokuen.process is not None
    orphans = psutil.Process(dokuen.process.pid).children(recursive=True)
    dokuen.process.kill()
    dokuen.process.wait(10)
    dokuen.process = None
    for orphan in orphans:
        with contextlib.suppress(psutil.NoSuchProcess):
            orphan.kill()
    psutil.wait_procs(orphans, timeout=10)


def test_workers_wait_for_the_new_web_and_a_kill_9_mid_check_comes_back_on_the_proven(
    tmp_path: Path, apps_dir: Path
) -> None:
    with nginx_dokuen(tmp_path / "home") as daemon:
        port = http_port(daemon)
        daemon.ctl("apps:create", "blog")
        daemon.ctl("config:set", "blog", "DOKUEN_BOOT_TIMEOUT=60")
        daemon.deploy("blog", tagged(apps_dir / "one", "one", "exec python3 envserver.py"))
        wait_for(lambda: daemon.running("blog", 2), "v1: web and worker")
        before = pids(daemon, "blog")
        # v2's web takes a while to answer: until it does, v1's worker runs on.
        slow = "echo booting two; sleep 1.5; exec python3 envserver.py"
        deploy = subprocess.Popen(
            [str(BIN / "dokuenctl"), "deploy", "blog", str(tagged(apps_dir / "two", "two", slow))],
            env=daemon.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: "booting two" in daemon.log(), "v2's web to start booting")
        assert listing(daemon, "blog")[0]["pending"] is True  # v2, shown pending
        assert psutil.Process(before["worker.1"]).is_running()
        assert (daemon.home / "apps/blog/current").readlink().name == "v1"
        assert "worker of two" not in daemon.log()
        out, err = deploy.communicate(timeout=60)
        assert deploy.returncode == 0, err
        assert "-----> Released v2" in out
        after = pids(daemon, "blog")
        assert after["worker.1"] != before["worker.1"]
        assert not psutil.pid_exists(before["worker.1"])
        log = daemon.log()
        # The new worker started only after the new web answered (and the old worker went).
        assert log.index("web.1 answers a TCP connect") < log.index("worker of two up")
        assert (env_via(port, "blog.localhost") or {}).get("TAG") == "two"

        # v3's web never answers; dokuend is killed while v3 is pending.
        never = "echo booting three; exec sleep 1000"
        deploy = subprocess.Popen(
            [str(BIN / "dokuenctl"), "deploy", "blog", str(tagged(apps_dir / "3", "three", never))],
            env=daemon.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: "booting three" in daemon.log(), "v3's web to start booting")
        assert (daemon.home / "apps/blog/pending.json").exists()
        kill_dokuend_and_orphans(daemon)
        out, err = deploy.communicate(timeout=30)
        assert deploy.returncode != 0  # the interrupted deploy never reports success
        assert "Released v3" not in out
        daemon.start()  # a new dokuend on the same home
        served = wait_for(lambda: env_via(port, "blog.localhost"), "v2 through nginx again")
        assert served["TAG"] == "two"
        rows = listing(daemon, "blog")
        assert [(r["version"], r["current"]) for r in rows] == [
            ("v3", False),
            ("v2", True),
            ("v1", False),
        ]
        assert "dokuend stopped before its processes passed" in rows[0]["failed"]
        assert not (daemon.home / "apps/blog/pending.json").exists()
        assert (daemon.home / "apps/blog/current").readlink().name == "v2"
        wait_for(lambda: daemon.running("blog", 2), "v2: web and worker")
        assert "v3 was not proven: dokuend stopped" in daemon.log()
        assert "worker of three" not in daemon.log()
        # rollback skips nothing here: the release before v2 is v1.
        assert "Rolled back to v1 as v4" in daemon.ctl("rollback", "blog").stdout


def test_a_first_deploy_whose_web_never_answers_fails_with_its_last_lines(
    tmp_path: Path, apps_dir: Path
) -> None:
    with nginx_dokuen(tmp_path / "home") as daemon:
        port = http_port(daemon)
        daemon.ctl("apps:create", "blog")
        daemon.ctl("config:set", "blog", "DOKUEN_BOOT_TIMEOUT=60")
        # Exits while it boots: the deploy fails at once (well before the 60 s boot timeout:
        # the call's own timeout is 30 s), with the exit code and its last lines.
        crashing = 'echo "no DATABASE_URL, giving up"; exit 3'
        result = daemon.ctl(
            "deploy",
            "blog",
            str(tagged(apps_dir / "one", "one", crashing)),
            check=False,
            timeout=30,
        )
        assert result.returncode == 1
        assert "deploy of v1 failed: web.1 exited with code 3 before it answered. Its last " in (
            result.stderr
        )
        assert "    no DATABASE_URL, giving up" in result.stderr
        assert "Traceback" not in result.stderr
        assert daemon.ps("blog") == []  # neither its web nor its worker was left running
        assert not (daemon.home / "apps/blog/current").is_symlink()
        [row] = listing(daemon, "blog")
        assert (row["version"], row["current"]) == ("v1", False)
        assert row["failed"].startswith("deploy failed: web.1 exited with code 3")
        info = daemon.ctl("releases:info", "blog", "v1").stdout
        assert "failed      deploy failed: web.1 exited with code 3" in info
        # Never answers: fails once the boot timeout passes, not reported as success.
        daemon.ctl("config:set", "blog", "DOKUEN_BOOT_TIMEOUT=1")
        silent = "echo up but deaf; exec sleep 1000"
        result = daemon.ctl(
            "deploy", "blog", str(tagged(apps_dir / "two", "two", silent)), check=False
        )
        assert result.returncode == 1
        assert "deploy of v2 failed: web.1 did not answer a TCP connect on port" in result.stderr
        assert "    up but deaf" in result.stderr
        assert daemon.ps("blog") == []
        nothing = daemon.ctl("rollback", "blog", check=False)
        assert nothing.returncode == 1
        assert "has no release before the current one" in nothing.stderr
        # A good deploy then works, as v3; rollback has nothing proven to go back to.
        second_fails = (
            'test "$DYNO" = web.2 && { echo "no room for two"; exit 4; }; exec python3 envserver.py'
        )
        daemon.deploy("blog", tagged(apps_dir / "3", "three", second_fails))
        assert wait_for(lambda: env_via(port, "blog.localhost"), "v3")["TAG"] == "three"
        # A scale is pending until its new web processes pass: web.2 fails, nothing changes.
        before = pids(daemon, "blog")
        scale = daemon.ctl("ps:scale", "blog", "web=2", check=False)
        assert scale.returncode == 1
        assert scale.stderr.startswith(
            "error: scaling blog web=2 failed (the formation stays web=1, worker=1): web.2 "
            "exited with code 4 before it answered. Its last lines:\n"
        )
        assert "    no room for two" in scale.stderr
        assert pids(daemon, "blog") == before
        formation = json.loads((daemon.home / "apps/blog/formation.json").read_text())
        assert formation == {"web": 1, "worker": 1}
        refused = daemon.ctl("rollback", "blog", check=False)
        assert refused.returncode == 1
        assert "no release before the current one that did not fail to boot" in refused.stderr
        assert [
            (r["version"], r["current"], bool(r["failed"])) for r in listing(daemon, "blog")
        ] == [
            ("v3", True, False),
            ("v2", False, True),
            ("v1", False, True),
        ]


def test_scaling_past_the_port_range_is_refused_before_anything_changes(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    dokuen.deploy("blog", tagged(apps_dir / "blog", "one", "exec python3 envserver.py"))
    wait_for(lambda: dokuen.running("blog", 2), "web and worker")
    before = pids(dokuen, "blog")
    size = dokuen.ports[1] - dokuen.ports[0] + 1
    result = dokuen.ctl("ps:scale", "blog", f"web={size}", check=False)
    assert result.returncode == 1
    first, last = dokuen.ports
    assert result.stderr == (
        f"error: cannot run {size + 1} processes: DOKUEN_PORT_RANGE {first}-{last} has room "
        f"for {size} (one port each; widen DOKUEN_PORT_RANGE and restart "
        "dokuend, or scale something down)\n"
    )
    assert pids(dokuen, "blog") == before
    assert json.loads((dokuen.home / "apps/blog/formation.json").read_text()) == {
        "web": 1,
        "worker": 1,
    }
    assert "scaled" not in dokuen.log()
    dokuen.ctl("ps:scale", "blog", f"web={size - 1}")  # exactly what fits
    wait_for(lambda: dokuen.running("blog", size), "the range full")


def test_eio_while_writing_config_or_state_keeps_the_previous_state_serving(
    tmp_path: Path, apps_dir: Path
) -> None:
    """Fault injection: DOKUEN_FAULT_EIO names a file listing the file names whose writes
    fail with EIO (store.injected_fault, the seam in every atomic write of state and config)."""
    faults = tmp_path / "faults"
    faults.write_text("")
    with nginx_dokuen(tmp_path / "home", DOKUEN_FAULT_EIO=str(faults)) as daemon:
        port = http_port(daemon)
        daemon.deploy("blog", tagged(apps_dir / "blog", "one", "exec python3 envserver.py"))
        daemon.ctl("config:set", "blog", "FOO=1")  # v2
        wait_for(lambda: (env_via(port, "blog.localhost") or {}).get("FOO") == "1", "v2")
        env_file = daemon.home / "apps/blog/env/FOO"
        # The new processes pass, then writing the config fails: v3 never becomes current.
        faults.write_text("FOO\n")
        result = daemon.ctl("config:set", "blog", "FOO=2", check=False)
        assert result.returncode == 1
        assert result.stderr == (f"error: config change of v3 failed: {env_file}: {EIO}\n")
        assert env_file.read_text() == "1"
        assert not list(env_file.parent.glob(".*.tmp"))
        served = wait_for(lambda: env_via(port, "blog.localhost"), "the previous config")
        assert served["FOO"] == "1"
        wait_for(lambda: daemon.running("blog", 2), "v2's web and worker")
        rows = listing(daemon, "blog")
        assert [(r["version"], r["current"], bool(r["failed"])) for r in rows[:2]] == [
            ("v3", False, True),
            ("v2", True, False),
        ]
        # The state file of a scale: the new worker stops again, the formation stays.
        formation_file = daemon.home / "apps/blog/formation.json"
        faults.write_text("formation.json\n")
        result = daemon.ctl("ps:scale", "blog", "worker=2", check=False)
        assert result.returncode == 1
        assert result.stderr == f"error: {formation_file}: {EIO}\n"
        assert json.loads(formation_file.read_text()) == {"web": 1, "worker": 1}
        wait_for(lambda: daemon.running("blog", 2), "one worker again")
        # The record of a switch under way cannot be written: nothing starts.
        faults.write_text("pending.json\n")
        web = pids(daemon, "blog")["web.1"]
        result = daemon.ctl("config:set", "blog", "FOO=4", check=False)
        assert result.returncode == 1
        assert "pending.json: Input/output error" in result.stderr
        assert pids(daemon, "blog")["web.1"] == web
        # The daemon goes on: with the disk healthy again, everything works.
        faults.write_text("")
        daemon.ctl("config:set", "blog", "FOO=5")
        wait_for(lambda: (env_via(port, "blog.localhost") or {}).get("FOO") == "5", "FOO=5")
        daemon.ctl("ps:scale", "blog", "worker=2")
        wait_for(lambda: daemon.running("blog", 3), "two workers")
        assert daemon.process is not None
        assert daemon.process.poll() is None
