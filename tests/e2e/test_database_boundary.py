"""The database boundary end to end (issue 12), with the installed dokuend and a real
PostgreSQL: the cluster runs as its own account and listens on no TCP port; an app reaches
it only through its own socket directory; a process that squats the cluster's port while the
cluster is down collects nothing; a cluster (and apps) made by Dokuen 0.1 move over.
"""

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from dokuen.data.postgres import find_bindir, has_server
from tests.e2e.conftest import (
    Dokuen,
    free_port_block,
    get_json,
    leftover_processes,
    wait_for,
    write_app,
)
from tests.e2e.test_postgres import sql

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not has_server(find_bindir(None)),
        reason="PostgreSQL is not installed (bin/setup installs Debian's postgresql)",
    ),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
    ),
]
NOBODY = 65534


class Squatter:
    """A local process's listener on the cluster's TCP port (v4 and v6 loopback): it keeps
    whatever reaches it."""

    def __init__(self, port: int) -> None:
        self.received: list[bytes] = []
        self.listeners = []
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind((address, port))
            except OSError:
                listener.close()
                if family == socket.AF_INET:
                    raise  # the port must be ours to squat; ::1 may not exist here
                continue
            listener.listen(16)
            listener.settimeout(0.1)
            self.listeners.append(listener)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for listener in self.listeners:
                try:
                    conn, _peer = listener.accept()
                except (TimeoutError, OSError):
                    continue
                with conn:
                    self.received.append(self._collect(conn) or b"(a connection)")

    @staticmethod
    def _collect(conn: socket.socket) -> bytes:
        """Play PostgreSQL as far as a password: answer an SSLRequest with "no TLS", read the
        startup packet, ask for the password in clear text (libpq sends it unless told
        otherwise) and keep what comes back."""
        conn.settimeout(2)
        data = b""
        with contextlib.suppress(OSError):
            data = conn.recv(1 << 16)
            if data[4:8] == b"\x04\xd2\x16\x2f":  # SSLRequest
                conn.sendall(b"N")
                data += conn.recv(1 << 16)
            conn.sendall(b"R" + (8).to_bytes(4, "big") + (3).to_bytes(4, "big"))
            data += conn.recv(1 << 16)
        return data

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for listener in self.listeners:
            listener.close()


@contextlib.contextmanager
def squatting(port: int) -> Iterator[Squatter]:
    squatter = Squatter(port)
    try:
        yield squatter
    finally:
        squatter.close()


def psql_as(uid: int, gid: int, url: str) -> subprocess.CompletedProcess[str]:
    """psql with the app's URL, as ``uid`` with only the group ``gid`` (an app's process)."""
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "psql",
            url,
            "-At",
            "-c",
            "SELECT current_user",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": os.defpath, "PGCONNECT_TIMEOUT": "3", "HOME": "/"},
    )


@pytest.fixture
def daemon() -> Iterator[Dokuen]:
    top = Path(tempfile.mkdtemp(prefix="dokuen-pgb-"))
    top.chmod(0o755)  # pytest's own are 0700, closed to the cluster's account
    daemon = Dokuen(
        home=top / "home",
        ports=free_port_block(),
        extra_env={
            "DOKUEN_POSTGRES": "managed",
            "DOKUEN_POSTGRES_PORT": str(free_port_block(1)[0]),
        },
    )
    daemon.start()
    try:
        yield daemon
    finally:
        if daemon.process is not None:
            assert daemon.terminate() == 0
        assert leftover_processes(str(daemon.home / "postgres" / "data")) == []
        shutil.rmtree(top)


def port_of(daemon: Dokuen) -> int:
    return int(daemon.extra_env["DOKUEN_POSTGRES_PORT"])


def postgres_status(daemon: Dokuen) -> dict[str, object]:
    return dict(json.loads(daemon.ctl("status", "--json").stdout)["postgres"])


def test_the_cluster_is_its_own_account_on_no_tcp_port_and_its_password_is_roots(
    daemon: Dokuen,
) -> None:
    daemon.ctl("apps:create", "blog")
    daemon.ctl("pg:create", "blog")
    pid = postgres_status(daemon)["pid"]
    assert isinstance(pid, int)
    postmaster = psutil.Process(pid)
    account = pwd.getpwnam("dokuen-postgres")
    processes = [postmaster, *postmaster.children(recursive=True)]
    assert len(processes) > 3  # the postmaster and its checkpointer, writers, ...
    for process in processes:
        assert process.uids().real == account.pw_uid, process.cmdline()
        assert process.username() == "dokuen-postgres"
    assert account.pw_uid < 1000  # a system account, with no way to log in
    assert account.pw_shell.endswith(("nologin", "false"))
    # No TCP listener at all: nothing to squat, nothing to brute-force over the network.
    inet = [c for c in postmaster.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert inet == []

    root = daemon.home / "postgres"
    for path, mode, uid in (
        (root, 0o750, 0),
        (root / "data", 0o700, account.pw_uid),
        (root / "run", 0o700, account.pw_uid),
        (root / "superuser.password", 0o600, 0),
        (daemon.home / "apps" / "blog" / "database.json", 0o600, 0),
    ):
        info = path.stat()
        assert (oct(stat.S_IMODE(info.st_mode)), info.st_uid) == (oct(mode), uid), path
    assert (root / "superuser.password").stat().st_gid == 0
    # The cluster's account reads no password of dokuend's.
    as_cluster = [f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups"]
    read = subprocess.run(
        ["setpriv", *as_cluster, "cat", str(root / "superuser.password")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert read.returncode == 1
    assert "Permission denied" in read.stderr


def test_an_app_reaches_its_database_through_its_own_socket_directory_only(
    daemon: Dokuen, tmp_path: Path
) -> None:
    port = port_of(daemon)
    daemon.deploy("blog", write_app(tmp_path / "blog", "web: python3 envserver.py\n"))
    daemon.ctl("pg:create", "blog")
    url = daemon.ctl("config:get", "blog", "DATABASE_URL").stdout.strip()
    directory = daemon.home / "apps" / "blog" / "run" / "postgresql"
    assert url.startswith("postgresql://app_blog:")
    assert url.endswith(f"@/app_blog?host={directory}&port={port}")  # no TCP host at all
    info = directory.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o750, 0, os.getegid())
    link = directory / f".s.PGSQL.{port}"
    cluster_socket = daemon.home / "postgres" / "run" / link.name
    assert link.stat().st_ino == cluster_socket.stat().st_ino

    # From the app's own process (dokuenctl run: the app's environment, as its processes).
    ran = daemon.ctl("run", "blog", 'psql "$DATABASE_URL" -At -c "SELECT current_user"')
    assert ran.stdout.strip() == "app_blog"
    # The directory's group passes (dokuend's own, as long as apps share it) ...
    assert psql_as(NOBODY, os.getegid(), url).stdout.strip() == "app_blog"
    # ... another group does not, neither through the app's link nor the cluster's own.
    refused = psql_as(NOBODY, NOBODY, url)
    assert refused.returncode != 0
    assert "Permission denied" in refused.stderr
    own = url.replace(str(directory), str(cluster_socket.parent))
    refused = psql_as(NOBODY, os.getegid(), own)
    assert "Permission denied" in refused.stderr

    # pg:psql and pg:info still work (as root, through the app's directory).
    psql = daemon.ctl("pg:psql", "blog", "-At", "-c", "SELECT current_user")
    assert psql.stdout.strip() == "app_blog"
    shown = json.loads(daemon.ctl("pg:info", "blog", "--json").stdout)["url"]
    assert shown == url.replace(url.split(":")[2].split("@")[0], "****")

    # pg:destroy takes the directory away with the database.
    daemon.ctl("pg:destroy", "blog", "--confirm", "blog")
    assert not directory.exists()


def test_a_squatter_on_the_clusters_port_while_it_is_down_collects_nothing(
    daemon: Dokuen,
) -> None:
    port = port_of(daemon)
    daemon.ctl("apps:create", "blog")
    daemon.ctl("pg:create", "blog")
    url = daemon.ctl("config:get", "blog", "DATABASE_URL").stdout.strip()
    password = url.split(":")[2].split("@")[0]
    sql(url, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)")

    # Down: dokuend (and its cluster) stopped, and another local user takes the port.
    assert daemon.terminate() == 0
    with squatting(port) as squatter:
        # The app's URL finds a dead link, and nothing else.
        with pytest.raises(psycopg.OperationalError) as down:
            sql(url, "SELECT 1")
        stolen = [got for got in squatter.received if password.encode() in got]
        assert stolen == [], "the squatter collected the app's password"
        assert squatter.received == []
        assert "failed: Connection refused" in str(down.value)
        daemon.start()
        wait_for(lambda: postgres_status(daemon)["state"] == "running", "PostgreSQL", 30)
        assert sql(url, "SELECT n FROM t") == [(1,)]  # the squatted port did not stop it
        # Restarting: a fast shutdown of the postmaster, the app trying all along.
        before = postgres_status(daemon)["pid"]
        assert isinstance(before, int)
        tries: list[str] = []
        stop = threading.Event()

        def keep_trying() -> None:
            while not stop.is_set():
                try:
                    sql(url + "&connect_timeout=2", "SELECT 1")
                    tries.append("ok")
                except psycopg.OperationalError as exc:
                    tries.append(str(exc).splitlines()[0])
                time.sleep(0.01)

        client = threading.Thread(target=keep_trying)
        client.start()
        try:
            os.kill(before, signal.SIGINT)
            wait_for(
                lambda: (
                    postgres_status(daemon)["pid"] not in (None, before)
                    and postgres_status(daemon)["state"] == "running"
                ),
                "PostgreSQL started again",
                30,
            )
            time.sleep(0.3)  # a few tries against the new server too
        finally:
            stop.set()
            client.join()
        assert "ok" in tries
        failed = [reason for reason in tries if reason != "ok"]
        assert failed, "no try fell while the cluster was down"  # else it proves nothing
        # While it was down the app's tries went to its socket, never to a TCP address.
        assert any(f"/run/postgresql/.s.PGSQL.{port}" in reason for reason in failed), failed
        assert not [r for r in failed if any(a in r for a in ("127.0.0.1", "::1", "localhost"))]
        assert not [got for got in squatter.received if password.encode() in got]
        assert squatter.received == []  # not one connection, let alone a password
    assert password not in daemon.log()


def test_a_cluster_and_an_app_made_by_dokuen_0_1_move_over(daemon: Dokuen, tmp_path: Path) -> None:
    """0.1's cluster ran as ``postgres`` and gave apps a TCP URL: at start its files go to
    dokuen-postgres and the app gets its socket URL."""
    try:
        old_owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres account on this machine")
    port = port_of(daemon)
    daemon.deploy("old", write_app(tmp_path / "old", "web: python3 envserver.py\n"))
    daemon.ctl("pg:create", "old")
    url = daemon.ctl("config:get", "old", "DATABASE_URL").stdout.strip()
    sql(url, "CREATE TABLE t (n int); INSERT INTO t VALUES (42)")
    password = url.split(":")[2].split("@")[0]
    legacy = f"postgres://app_old:{password}@127.0.0.1:{port}/app_old"
    assert daemon.terminate() == 0
    # As 0.1 left it: the postgres account's files, a TCP URL, no socket directory.
    data = daemon.home / "postgres" / "data"
    for path in (data, *data.rglob("*")):
        os.lchown(path, old_owner.pw_uid, old_owner.pw_gid)
    (daemon.home / "apps" / "old" / "env" / "DATABASE_URL").write_text(legacy)
    shutil.rmtree(daemon.home / "apps" / "old" / "run")

    daemon.start()
    account = pwd.getpwnam("dokuen-postgres")
    assert [p for p in (data, *data.rglob("*")) if p.lstat().st_uid != account.pw_uid] == []
    assert "files moved from user postgres to dokuen-postgres" in daemon.log()
    pid = postgres_status(daemon)["pid"]
    assert isinstance(pid, int)
    assert psutil.Process(pid).username() == "dokuen-postgres"
    assert daemon.ctl("config:get", "old", "DATABASE_URL").stdout.strip() == url
    assert sql(url, "SELECT n FROM t") == [(42,)]
    # Its process started with the new URL: no restart, no config change.
    (web,) = wait_for(lambda: daemon.running("old", 1), "old's web process")
    assert get_json(web["port"])["DATABASE_URL"] == url
    assert web["restarts"] == 0
    assert "old[dokuen]: DATABASE_URL now reaches its own socket" in daemon.log()
