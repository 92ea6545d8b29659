"""Repository bundles and backup schedules through the installed dokuend and dokuenctl: a
push stores a bundle that clones back to the pushed commit; a failed backup never fails a
push and is loud; a scheduled backup missed while dokuend was down runs when it starts."""

import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from tests.e2e.conftest import Dokuen, free_port_block, wait_for
from tests.e2e.gitwork import Work, remote_lines
from tests.motoserver import CREDENTIALS, moto_server

WEB = "web: python3 envserver.py\n"
Start = Callable[[dict[str, str]], Dokuen]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start dokuend with extra settings (once per test)."""
    started: list[Dokuen] = []

    def starter(extra_env: dict[str, str]) -> Dokuen:
        daemon = Dokuen(home=tmp_path / "home", ports=free_port_block(), extra_env=extra_env)
        daemon.start()
        started.append(daemon)
        return daemon

    yield starter
    for daemon in started:
        if daemon.process is not None:
            daemon.terminate()


def repo_of(dokuen: Dokuen, app: str) -> str:
    return str(dokuen.home / "apps" / app / "repo.git")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def set_two_days_ago(dokuen: Dokuen, app: str) -> Path:
    """Move the app's schedule's start two days back, as if dokuend had been down since:
    two nights' backups were missed."""
    schedule_file = dokuen.home / "apps" / app / "backup-schedule.json"
    schedule = json.loads(schedule_file.read_text())
    schedule["since"] = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    schedule_file.write_text(json.dumps(schedule))
    return schedule_file


def test_the_repo_bundle_after_a_push_clones_back_to_the_same_commit(
    start: Start, tmp_path: Path
) -> None:
    target = tmp_path / "backups"
    target.mkdir()
    dokuen = start({"DOKUEN_BACKUP_URL": f"file://{target}"})
    dokuen.ctl("apps:create", "blog")
    work = Work.create(tmp_path / "blog", WEB)
    work.commit("second", {"README": "hello\n"})
    push = work.push(repo_of(dokuen, "blog"), "main")
    assert push.returncode == 0, push.stderr
    last = remote_lines(push.stderr)[-1]
    assert last.startswith("-----> Backed up the repository: blog/repo/")
    key = last.rsplit(" ", 1)[1]
    manifest = json.loads((target / key.replace(".bundle", ".json")).read_text())
    assert manifest["commit"] == work.head()
    assert manifest["ref"] == "refs/heads/main"
    restored = tmp_path / "restored"
    subprocess.run(["git", "clone", "-q", str(target / key), str(restored)], check=True)
    assert git(restored, "rev-parse", "main") == work.head()
    assert f"blog[dokuen]: repository backup stored (after a push): {key}" in dokuen.log()


def test_a_failed_bundle_never_fails_the_push_and_warns_until_one_is_stored(
    start: Start, tmp_path: Path
) -> None:
    target = tmp_path / "backups"  # not made yet: every backup fails
    dokuen = start({"DOKUEN_BACKUP_URL": f"file://{target}"})
    dokuen.ctl("apps:create", "blog")
    work = Work.create(tmp_path / "blog", WEB)
    push = work.push(repo_of(dokuen, "blog"), "main")
    assert push.returncode == 0, push.stderr
    lines = remote_lines(push.stderr)
    assert "-----> blog v1 is running" in " ".join(lines)
    assert lines[-1] == (
        f"warning: the push landed, but its backup failed: file://{target}: no such directory "
        "(create it first)"
    )
    assert git(tmp_path, "ls-remote", repo_of(dokuen, "blog"), "main").split()[0] == work.head()
    listing = dokuen.ctl("apps")  # any command now warns, on stderr
    assert listing.stdout.startswith("APP")
    assert "warning: the repository backup of blog failed at " in listing.stderr
    assert listing.stderr.endswith(": no such directory (create it first)\n")
    status = dokuen.ctl("status").stdout
    assert "backups    FAILING: the repository backup of blog failed at " in status
    assert "blog[dokuen]: repository backup FAILED (after a push): " in dokuen.log()
    target.mkdir()
    stored = dokuen.ctl("backups:capture", "blog", "--repo", "--verify")
    assert stored.stdout.startswith("blog: stored blog/repo/")
    assert stored.stdout.endswith(", verified by a restore\n")
    assert dokuen.ctl("apps").stderr == ""


def test_a_scheduled_backup_missed_while_dokuend_was_down_runs_when_it_starts(
    start: Start, tmp_path: Path
) -> None:
    target = tmp_path / "backups"
    target.mkdir()
    settings = {"DOKUEN_BACKUP_URL": f"file://{target}"}
    dokuen = start(settings)
    dokuen.ctl("apps:create", "blog")
    work = Work.create(tmp_path / "blog", WEB)
    assert work.push(repo_of(dokuen, "blog"), "main").returncode == 0
    bad = dokuen.ctl("backups:schedule", "blog", "0 3 * *", check=False)
    assert bad.returncode == 2
    assert "invalid cron expression '0 3 * *' (use five fields" in bad.stderr
    shown = dokuen.ctl("backups:schedule", "blog", "0 3 * * *", "--keep", "1").stdout
    assert shown.splitlines()[0].startswith('blog: backups at "0 3 * * *" (')
    assert "keeping the 1 newest, verifying each one" in shown
    dokuen.terminate()
    schedule_file = set_two_days_ago(dokuen, "blog")
    dokuen.start()
    status_file = dokuen.home / "apps" / "blog" / "backup-status.json"
    wait_for(
        lambda: status_file.exists() and json.loads(status_file.read_text())["scheduled"],
        "the missed backup to run",
    )
    status = json.loads(status_file.read_text())
    assert status["runs"] == 1  # made up once, not twice
    assert status["scheduled"]["ok"] is True
    assert status["scheduled"]["verified"] is True
    # --keep 1: only the scheduled bundle is left, the one from the push is gone.
    assert sorted(p.name for p in (target / "blog" / "repo").iterdir()) == [
        f"{status['scheduled']['id']}.bundle",
        f"{status['scheduled']['id']}.json",
    ]
    info = json.loads(dokuen.ctl("backups:schedule", "blog", "--json").stdout)
    assert info["scheduled"]["id"] == status["scheduled"]["id"]
    assert dokuen.ctl("backups:schedule", "blog", "--off").stdout.startswith(
        "blog: no backup schedule (removed)"
    )
    assert not schedule_file.exists()


def test_a_failed_scheduled_backup_warns_on_the_next_command(start: Start, tmp_path: Path) -> None:
    dokuen = start({"DOKUEN_BACKUP_URL": f"file://{tmp_path}/nowhere"})
    dokuen.ctl("apps:create", "blog")
    dokuen.ctl("backups:schedule", "blog", "@daily")
    dokuen.terminate()
    set_two_days_ago(dokuen, "blog")
    dokuen.start()
    wait_for(lambda: "scheduled backup FAILED" in dokuen.log(), "the missed backup to fail")
    result = dokuen.ctl("ps")
    assert result.stderr.startswith("warning: the scheduled backup of blog failed at ")
    assert "last run    " in dokuen.ctl("backups:schedule", "blog").stdout


def test_a_push_stores_its_bundle_in_s3(start: Start, tmp_path: Path) -> None:
    with moto_server(tmp_path / "moto.log") as server:
        s3 = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        s3.create_bucket(Bucket="backups")
        dokuen = start({"DOKUEN_BACKUP_URL": "s3://backups/dokuen", **server.environ})
        dokuen.ctl("apps:create", "blog")
        work = Work.create(tmp_path / "blog", WEB)
        push = work.push(repo_of(dokuen, "blog"), "main")
        assert push.returncode == 0, push.stderr
        key = remote_lines(push.stderr)[-1].rsplit(" ", 1)[1]
        assert key.startswith("blog/repo/")
        bundle = tmp_path / "blog.bundle"
        s3.download_file("backups", f"dokuen/{key}", str(bundle))
        dokuen.terminate()
    restored = tmp_path / "restored"
    subprocess.run(["git", "clone", "-q", str(bundle), str(restored)], check=True)
    assert git(restored, "rev-parse", "main") == work.head()
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in dokuen.log() + dokuen.daemon_stderr()
