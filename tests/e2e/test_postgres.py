"""PostgreSQL and database backups end to end: the installed dokuend runs its own cluster
(initdb under a temporary DOKUEN_HOME, as the dokuen-postgres account when the tests run as
root, for PostgreSQL refuses root), and every action goes through dokuenctl.

One daemon and one cluster serve the whole module (initdb and a start cost seconds); each
test uses apps of its own.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from dokuen.data.postgres import find_bindir, has_server
from tests.e2e.conftest import (
    BIN,
    Dokuen,
    free_port_block,
    get_json,
    leftover_processes,
    wait_for,
    write_app,
)
from tests.e2e.test_backups import set_two_days_ago

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not has_server(find_bindir(None)),
        reason="PostgreSQL is not installed (bin/setup installs Debian's postgresql)",
    ),
]


@dataclass
class Cluster:
    daemon: Dokuen
    top: Path  # world-traversable: the cluster's account must reach DOKUEN_HOME
    backups: Path  # the file:// backup target
    port: int

    def use_target(self, url: str) -> None:
        """Point DOKUEN_BACKUP_URL elsewhere (dokuend.env, then SIGHUP)."""
        daemon = self.daemon
        before = daemon.daemon_stderr().count('"daemon.reloaded"')
        (daemon.home / "dokuend.env").write_text(f"DOKUEN_BACKUP_URL={url}\n")
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.daemon_stderr().count('"daemon.reloaded"') > before, "the reload")

    def database_url(self, app: str) -> str:
        """Create ``app`` with a database; return its DATABASE_URL."""
        self.daemon.ctl("apps:create", app)
        created = self.daemon.ctl("pg:create", app)
        assert f"created database app_{app} for {app}" in created.stdout
        return self.daemon.ctl("config:get", app, "DATABASE_URL").stdout.strip()

    def admin_url(self) -> str:
        """The superuser, through the cluster's own socket directory (root may enter it)."""
        password = (self.daemon.home / "postgres" / "superuser.password").read_text().strip()
        run = self.daemon.home / "postgres" / "run"
        return f"postgresql://dokuen:{password}@/postgres?host={run}&port={self.port}"

    def socket_dir(self, app: str) -> Path:
        return self.daemon.home / "apps" / app / "run" / "postgresql"

    def app_url_shape(self, app: str) -> str:
        """DATABASE_URL with its password hidden, as pg:create and pg:info show it."""
        return (
            f"postgresql://app_{app}:****@/app_{app}?host={self.socket_dir(app)}&port={self.port}"
        )

    def listing(self, app: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(self.daemon.ctl("backups", app, "--json").stdout)
        return found

    def postgres(self) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(self.daemon.ctl("status", "--json").stdout)
        return dict(status["postgres"])


def sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement.encode())
        return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    top = Path(tempfile.mkdtemp(prefix="dokuen-pg-"))
    top.chmod(0o755)  # pytest's own temporary directories are 0700, closed to postgres
    backups = top / "backups"
    backups.mkdir()
    port = free_port_block(1)[0]
    daemon = Dokuen(
        home=top / "home",
        ports=free_port_block(),
        extra_env={"DOKUEN_POSTGRES": "managed", "DOKUEN_POSTGRES_PORT": str(port)},
    )
    daemon.home.mkdir()
    (daemon.home / "dokuend.env").write_text(f"DOKUEN_BACKUP_URL=file://{backups}\n")
    daemon.start()
    try:
        yield Cluster(daemon, top, backups, port)
    finally:
        if daemon.process is not None:
            assert daemon.terminate() == 0
        data = str(daemon.home / "postgres" / "data")
        assert leftover_processes(data) == [], "PostgreSQL outlived dokuend"
        shutil.rmtree(top)


def test_an_app_reads_its_database_and_a_restore_brings_old_rows_back(cluster: Cluster) -> None:
    daemon = cluster.daemon
    daemon.deploy("blog", write_app(cluster.top / "blog", "web: python3 envserver.py\n"))
    created = daemon.ctl("pg:create", "blog")
    assert "created database app_blog for blog" in created.stdout
    assert f"DATABASE_URL={cluster.app_url_shape('blog')}" in created.stdout
    assert "its processes restarted with it" in created.stdout
    (web,) = wait_for(lambda: daemon.running("blog", 1), "blog restarted with DATABASE_URL")
    url = get_json(web["port"])["DATABASE_URL"]
    assert url.startswith("postgresql://app_blog:")
    assert url.endswith(f"@/app_blog?host={cluster.socket_dir('blog')}&port={cluster.port}")
    assert "****" not in url

    sql(url, "CREATE TABLE posts (id int PRIMARY KEY, title text)")
    sql(url, "INSERT INTO posts VALUES (1, 'first'), (2, 'second'), (3, 'third')")
    captured = daemon.ctl("backups:capture", "blog")
    assert captured.stdout.startswith("captured backup ")
    assert captured.stdout.rstrip().endswith(" kB, 1 tables, 3 rows)")
    (backup,) = cluster.listing("blog")
    assert backup["tables"] == {"public.posts": 3}
    assert backup["release"] == "v1"
    assert backup["server_version"].startswith(cluster.postgres()["version"])
    dump = cluster.backups / "blog" / "db" / f"{backup['id']}.dump"
    assert dump.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
    assert backup["size"] == dump.stat().st_size

    sql(url, "UPDATE posts SET title = 'changed'")
    sql(url, "DELETE FROM posts WHERE id = 3")
    refused = daemon.ctl("backups:restore", "blog", check=False)
    assert refused.returncode == 2
    assert "confirm with: dokuenctl backups:restore blog [ID] --confirm blog" in refused.stderr
    # A session in a transaction that read the table (and holds it) would block the
    # restore: the restore ends it.
    holder = psycopg.connect(url)
    holder.execute("SELECT count(*) FROM posts")
    restored = daemon.ctl("backups:restore", "blog", backup["id"], "--confirm", "blog")
    assert f"restored backup {backup['id']} of blog into blog" in restored.stdout
    assert "ended 1 session(s) of app_blog" in daemon.log()
    with pytest.raises(psycopg.OperationalError):
        holder.execute("SELECT 1")
    holder.close()
    assert sql(url, "SELECT id, title FROM posts ORDER BY id") == [
        (1, "first"),
        (2, "second"),
        (3, "third"),
    ]

    # psql runs in dokuenctl's own process, its login in PG* variables.
    psql = daemon.ctl("pg:psql", "blog", "-At", "-c", "SELECT count(*) FROM posts")
    assert psql.stdout.strip() == "3"
    info = json.loads(daemon.ctl("pg:info", "blog", "--json").stdout)
    assert info["database"] == "app_blog"
    assert info["tables"] == 1
    assert info["url"] == cluster.app_url_shape("blog")
    text = daemon.ctl("pg:info", "blog").stdout
    assert "server       managed PostgreSQL " in text
    assert url.split(":")[2].split("@")[0] not in daemon.log()  # the password is never logged
    assert url.split(":")[2].split("@")[0] not in daemon.daemon_stderr()


def test_verify_restores_into_a_scratch_database_and_refuses_a_corrupt_backup(
    cluster: Cluster,
) -> None:
    daemon = cluster.daemon
    url = cluster.database_url("notes")
    sql(url, "CREATE TABLE notes (body text); CREATE TABLE tags (name text)")
    sql(url, "INSERT INTO notes SELECT md5(g::text) FROM generate_series(1, 500) g")
    daemon.ctl("backups:capture", "notes")
    # What a verification leaves when dokuend dies mid-way goes at the next one.
    sql(cluster.admin_url(), "CREATE DATABASE dokuen_verify_left_over OWNER app_notes")
    verified = daemon.ctl("backups:verify", "notes")
    assert "is good: its checksum, its archive and the rows of its 2 tables match" in (
        verified.stdout
    )
    (backup,) = cluster.listing("notes")
    assert backup["verified"]["ok"] is True
    assert backup["tables"] == {"public.notes": 500, "public.tags": 0}
    scratch = sql(url, "SELECT datname FROM pg_database WHERE datname LIKE 'dokuen_verify_%'")
    assert scratch == []

    dump = cluster.backups / "notes" / "db" / f"{backup['id']}.dump"
    damaged = bytearray(dump.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    dump.write_bytes(bytes(damaged))
    sql(url, "DELETE FROM notes")
    for args in (("backups:verify", "notes"), ("backups:restore", "notes", "--confirm", "notes")):
        result = daemon.ctl(*args, check=False)
        assert result.returncode == 1, args
        assert "is corrupt: checksum mismatch" in result.stderr, args
    assert sql(url, "SELECT count(*) FROM notes") == [(0,)]  # the refused restore did nothing
    (backup,) = cluster.listing("notes")
    assert backup["verified"]["ok"] is False
    assert "checksum mismatch" in backup["verified"]["problems"][0]
    assert "FAILED" in daemon.ctl("backups", "notes").stdout


def test_a_restore_that_names_no_backup_skips_one_that_failed_its_verification(
    cluster: Cluster,
) -> None:
    daemon = cluster.daemon
    url = cluster.database_url("diary")
    sql(url, "CREATE TABLE days (day int)")
    sql(url, "INSERT INTO days VALUES (1), (2)")
    daemon.ctl("backups:capture", "diary")
    sql(url, "INSERT INTO days VALUES (3)")
    daemon.ctl("backups:capture", "diary")
    older, newest = cluster.listing("diary")
    dump = cluster.backups / "diary" / "db" / f"{newest['id']}.dump"
    dump.write_bytes(dump.read_bytes()[:-100])  # cut short
    assert daemon.ctl("backups:verify", "diary", check=False).returncode == 1
    sql(url, "DELETE FROM days")
    restored = daemon.ctl("backups:restore", "diary", "--confirm", "diary")
    assert f"restored backup {older['id']} of diary" in restored.stdout
    assert sql(url, "SELECT count(*) FROM days") == [(2,)]


def test_another_apps_backup_needs_force_and_apps_keep_to_their_databases(
    cluster: Cluster,
) -> None:
    daemon = cluster.daemon
    source = cluster.database_url("source")
    target = cluster.database_url("target")
    sql(source, "CREATE TABLE items (n int); INSERT INTO items VALUES (1), (2)")
    daemon.ctl("backups:capture", "source")
    refused = daemon.ctl(
        "backups:restore", "target", "--from", "source", "--confirm", "target", check=False
    )
    assert refused.returncode == 1
    assert "was taken from app source, not target" in refused.stderr
    assert "add --force" in refused.stderr
    daemon.ctl("backups:restore", "target", "--from", "source", "--confirm", "target", "--force")
    assert sql(target, "SELECT n FROM items ORDER BY n") == [(1,), (2,)]

    # One app's role cannot open another app's database.
    elsewhere = target.replace("@/app_target?", "@/app_source?")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        sql(elsewhere, "SELECT 1")

    refused = daemon.ctl("apps:destroy", "source", "--confirm", "source", check=False)
    assert refused.returncode == 1
    assert "destroy it first" in refused.stderr
    assert "dokuenctl pg:destroy source --confirm source" in refused.stderr
    daemon.ctl("pg:destroy", "source", "--confirm", "source")
    assert "DATABASE_URL" not in daemon.ctl("config", "source").stdout
    with pytest.raises(psycopg.OperationalError):
        sql(source, "SELECT 1")
    daemon.ctl("apps:destroy", "source", "--confirm", "source")
    # Its backups outlive it.
    assert len(cluster.listing("source")) == 1

    daemon.ctl("apps:create", "own")
    daemon.ctl("config:set", "own", "DATABASE_URL=postgres://me@db.example/own")
    refused = daemon.ctl("pg:create", "own", check=False)
    assert refused.returncode == 1
    assert "own already has a DATABASE_URL (unset it first" in refused.stderr


def test_a_target_that_is_missing_or_refuses_writes_stores_nothing(cluster: Cluster) -> None:
    daemon = cluster.daemon
    url = cluster.database_url("keep")
    sql(url, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
    missing = cluster.top / "no-such-dir"
    blocked = cluster.top / "blocked"
    blocked.mkdir()
    # A file where the app's directory would go: mkdir fails, for root too.
    (blocked / "keep").write_text("in the way\n")
    try:
        cluster.use_target(f"file://{missing}")
        result = daemon.ctl("backups:capture", "keep", check=False)
        assert result.returncode == 1
        assert f"file://{missing}: no such directory (create it first)" in result.stderr
        assert not missing.exists()

        cluster.use_target(f"file://{blocked}")
        result = daemon.ctl("backups:capture", "keep", check=False)
        assert result.returncode == 1
        assert f"to file://{blocked}: Not a directory" in result.stderr
        assert [p.name for p in blocked.rglob("*")] == ["keep"]  # no partial file either
        assert cluster.listing("keep") == []
        assert "backup failed" in daemon.log()
    finally:
        cluster.use_target(f"file://{cluster.backups}")
    assert list((daemon.home / "tmp").iterdir()) == []  # no dump left behind


def test_one_capture_at_a_time_and_a_server_that_stops_mid_dump(cluster: Cluster) -> None:
    daemon = cluster.daemon
    url = cluster.database_url("busy")
    sql(url, "CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 1000)")
    # The test holds a lock pg_dump must wait for: the capture stays mid-dump until then.
    locker = psycopg.connect(url)
    locker.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    first = subprocess.Popen(
        [str(BIN / "dokuenctl"), "backups:capture", "busy"],
        env=daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dokuen' "
            "AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'"
        )
        wait_for(lambda: sql(url, waiting) == [(1,)], "pg_dump waiting for the table")
        second = daemon.ctl("backups:capture", "busy", check=False)
        assert second.returncode == 1
        assert "busy's database is busy: capturing a backup (since " in second.stderr

        # The server stops (a fast shutdown ends every session) while pg_dump runs.
        pid = cluster.postgres()["pid"]
        os.kill(pid, signal.SIGINT)
        _out, error = first.communicate(timeout=30)
    finally:
        with contextlib.suppress(psycopg.Error):
            locker.close()
        if first.poll() is None:
            first.kill()
    assert first.returncode == 1
    assert "the dump of busy's database failed (pg_dump exited with code 1)" in error
    assert "pg_dump: error: query failed: " in error  # then what the server said, or not
    assert "nothing was stored" in error
    assert list((daemon.home / "tmp").iterdir()) == []
    assert not (cluster.backups / "busy").exists()

    # dokuend starts it again, and the next capture works.

    def started_again() -> bool:
        status = cluster.postgres()
        return status["state"] == "running" and status["pid"] not in (None, pid)

    wait_for(started_again, "PostgreSQL started again", timeout=30)
    daemon.ctl("backups:capture", "busy")
    (backup,) = cluster.listing("busy")
    assert backup["tables"] == {"public.t": 1000}


def test_the_cluster_starts_with_dokuend_and_stops_with_it(cluster: Cluster) -> None:
    daemon = cluster.daemon
    url = cluster.database_url("again")
    sql(url, "CREATE TABLE t (n int); INSERT INTO t VALUES (7)")
    before = cluster.postgres()["pid"]
    assert daemon.terminate() == 0
    data = str(daemon.home / "postgres" / "data")
    assert leftover_processes(data) == []
    assert "received fast shutdown request" in daemon.log()
    daemon.start()
    # Up before dokuend answers: apps that connect at boot find it.
    status = cluster.postgres()
    assert status["state"] == "running"
    assert status["pid"] != before
    assert sql(url, "SELECT n FROM t") == [(7,)]
    if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as an account of its own
        assert psutil.Process(status["pid"]).username() == "dokuen-postgres"
    assert "database system is ready to accept connections" in daemon.ctl("logs", "postgres").stdout
    text = daemon.ctl("status").stdout
    socket = daemon.home / "postgres" / "run" / f".s.PGSQL.{cluster.port}"
    assert f"postgres   managed, running, {socket}, pid {status['pid']}" in text


def test_an_external_server_named_by_its_url(cluster: Cluster, tmp_path: Path) -> None:
    """A second dokuend uses the first one's cluster as its external server."""
    admin_url = cluster.admin_url()
    password = admin_url.split(":")[2].split("@")[0]
    target = tmp_path / "backups"
    target.mkdir()
    daemon = Dokuen(
        home=tmp_path / "home",
        ports=free_port_block(),
        extra_env={
            "DOKUEN_POSTGRES": "external",
            "DOKUEN_POSTGRES_URL": admin_url,
            "DOKUEN_BACKUP_URL": f"file://{target}",
        },
    )
    daemon.start()
    try:
        status = daemon.ctl("status")
        run = cluster.daemon.home / "postgres" / "run"
        assert f"postgres   external, {run}:{cluster.port}\n" in status.stdout
        daemon.ctl("apps:create", "ext")
        daemon.ctl("pg:create", "ext")
        url = daemon.ctl("config:get", "ext", "DATABASE_URL").stdout.strip()
        # An external server's apps get its address as given (here: a socket directory).
        assert url.endswith(f"@/app_ext?host={run}&port={cluster.port}")
        sql(url, "CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2)")
        daemon.ctl("backups:capture", "ext")
        daemon.ctl("backups:verify", "ext")
        daemon.ctl("pg:destroy", "ext", "--confirm", "ext")
        with pytest.raises(psycopg.OperationalError):
            sql(url, "SELECT 1")
    finally:
        daemon.terminate()
    assert password not in daemon.log()
    assert password not in daemon.daemon_stderr()


def test_without_postgresql_the_message_names_the_package(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    for mode, line in (
        ("managed", "postgres   managed, not installed"),
        ("auto", "postgres   off (PostgreSQL is not in DOKUEN_POSTGRES_BIN="),
    ):
        daemon = Dokuen(
            home=tmp_path / mode,
            ports=free_port_block(),
            extra_env={
                "DOKUEN_POSTGRES": mode,
                "DOKUEN_POSTGRES_BIN": str(empty),
                "DOKUEN_BACKUP_URL": f"file://{tmp_path}",
            },
        )
        daemon.start()
        try:
            status = daemon.ctl("status")
            assert line in status.stdout
            if mode == "managed":
                assert "apt install postgresql" in status.stderr  # a warning
            else:
                assert status.stderr == ""  # auto: off is what was asked for
            daemon.ctl("apps:create", "blog")
            result = daemon.ctl("pg:create", "blog", check=False)
            assert result.returncode == 1
            assert "install Debian's postgresql package (apt install postgresql)" in (result.stderr)
            result = daemon.ctl("backups:capture", "blog", check=False)
            assert result.returncode == 1
            assert "(apt install postgresql-client)" in result.stderr
            assert not (daemon.home / "postgres").exists()
        finally:
            daemon.terminate()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_a_dokuend_that_is_not_root_runs_its_cluster_as_itself() -> None:
    """As under the systemd unit (the dokuen user): no user switch, no chown."""
    top = Path(tempfile.mkdtemp(prefix="dokuen-pg-user-"))
    top.chmod(0o755)
    nobody = 65534
    for directory in (top / "home", top / "backups"):
        directory.mkdir()
        os.chown(directory, nobody, nobody)
    daemon = Dokuen(
        home=top / "home",
        ports=free_port_block(),
        extra_env={
            "DOKUEN_POSTGRES": "managed",
            "DOKUEN_POSTGRES_PORT": str(free_port_block(1)[0]),
            "DOKUEN_BACKUP_URL": f"file://{top / 'backups'}",
        },
        launcher=("setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups"),
    )
    daemon.start()
    try:
        daemon.ctl("apps:create", "mine")
        daemon.ctl("pg:create", "mine")
        url = daemon.ctl("config:get", "mine", "DATABASE_URL").stdout.strip()
        sql(url, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
        daemon.ctl("backups:capture", "mine")
        daemon.ctl("backups:verify", "mine")
        pid = json.loads(daemon.ctl("status", "--json").stdout)["postgres"]["pid"]
        assert psutil.Process(pid).uids().real == nobody
        assert (daemon.home / "postgres" / "data").stat().st_uid == nobody
        (dump,) = (top / "backups" / "mine" / "db").glob("*.dump")
        assert dump.stat().st_uid == nobody
        assert dump.stat().st_mode & 0o777 == 0o600
    finally:
        assert daemon.terminate() == 0
        assert leftover_processes(str(daemon.home / "postgres" / "data")) == []
        shutil.rmtree(top)


def test_a_scheduled_backup_dumps_the_database_and_capture_all_takes_everything(
    cluster: Cluster,
) -> None:
    daemon = cluster.daemon
    url = cluster.database_url("sched")
    sql(url, "CREATE TABLE readings (value int)")
    sql(url, "INSERT INTO readings SELECT generate_series(1, 50)")
    daemon.ctl("backups:schedule", "sched", "@daily")
    daemon.terminate()
    set_two_days_ago(daemon, "sched")  # as if dokuend had been down: the run is due
    daemon.start()
    status_file = daemon.home / "apps" / "sched" / "backup-status.json"
    wait_for(
        lambda: status_file.exists() and json.loads(status_file.read_text())["scheduled"],
        "the missed scheduled backup to run",
        60,
    )
    scheduled = json.loads(status_file.read_text())["scheduled"]
    assert (scheduled["ok"], scheduled["verified"]) == (True, True)
    (backup,) = cluster.listing("sched")
    assert (backup["id"], backup["tables"]) == (scheduled["id"], {"public.readings": 50})
    assert "sched[dokuen]: backup " + scheduled["id"] + " verified" in daemon.log()

    every = daemon.ctl("backups:capture", "--all")
    assert re.search(r"^sched: stored sched/db/\d{8}T\d{6}Z\.dump$", every.stdout, re.M)
    assert "sched: skipped, " in every.stdout  # its repository: nothing pushed to it
    assert len(cluster.listing("sched")) == 2
    daemon.ctl("backups:schedule", "sched", "--off")


def test_over_ssh_a_backup_streams_to_the_client_and_sql_runs_as_the_app(
    cluster: Cluster, tmp_path: Path
) -> None:
    """``ssh dokuen@HOST dokuenctl backups:download APP > APP.dump`` gives the backup's very
    bytes; psql, refused over ssh, has its alternative: SQL through ``run``."""
    from tests.e2e.sshd import keygen, running_sshd  # noqa: PLC0415

    daemon = cluster.daemon
    url = cluster.database_url("wiki")
    sql(
        url,
        "CREATE TABLE pages AS SELECT g AS id, md5(g::text) AS body "
        "FROM generate_series(1, 2000) g",
    )
    daemon.ctl("backups:capture", "wiki")
    (backup,) = cluster.listing("wiki")
    stored = (cluster.backups / "wiki" / "db" / f"{backup['id']}.dump").read_bytes()
    with running_sshd(tmp_path / "sshd", daemon.home / ".ssh" / "authorized_keys") as server:
        keygen(server.client_key)
        daemon.ctl("ssh-keys:add", "wiki-ci", f"{server.client_key}.pub", "--app", "wiki")
        for asked in ("", " -o -", f" {backup['id']}"):
            streamed = subprocess.run(
                [
                    *server.ssh_argv,
                    f"{server.user}@127.0.0.1",
                    f"dokuenctl backups:download wiki{asked}",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert streamed.returncode == 0, streamed.stderr
            assert streamed.stdout == stored, asked
        assert not list(Path(daemon.env["HOME"]).glob("wiki-*.dump"))
        assert not list(Path.home().glob("wiki-*.dump"))

        daemon.deploy("wiki", write_app(tmp_path / "wiki", "web: python3 envserver.py\n"))
        query = server.ssh(
            'dokuenctl run wiki \'psql "$DATABASE_URL" -Atc "SELECT count(*) FROM pages"\''
        )
        assert query.returncode == 0, query.stderr
        assert query.stdout == "2000\n"


def test_a_second_dokuend_on_the_home_leaves_the_cluster_alone(cluster: Cluster) -> None:
    daemon = cluster.daemon
    url = cluster.database_url("lockpg")
    pid = cluster.postgres()["pid"]
    assert pid is not None
    assert daemon.process is not None
    second = subprocess.run(
        [str(BIN / "dokuend")],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert second.stderr.startswith(f"error: another dokuend (pid {daemon.process.pid}) runs on ")
    # The cluster was not stopped as a stale one: same postmaster, and it answers.
    assert cluster.postgres()["pid"] == pid
    assert psutil.pid_exists(pid)
    assert sql(url, "SELECT 1") == [(1,)]
