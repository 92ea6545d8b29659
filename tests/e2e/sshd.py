"""A real OpenSSH server for the end-to-end tests: a child of the test on a loopback port,
with its own host key and config, reading the authorized_keys that dokuend writes."""

import getpass
import os
import shlex
import signal
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port_block, wait_for

SSHD = Path("/usr/sbin/sshd")
# sshd's privilege separation directory, compiled in; Debian's service unit makes it.
PRIVSEP_DIR = Path("/run/sshd")


@dataclass(frozen=True)
class Sshd:
    port: int
    user: str
    client_key: Path  # the private key of the client side
    known_hosts: Path
    log: Path

    @property
    def ssh_argv(self) -> list[str]:
        """``ssh`` with the client key, this server's host key pinned, no user config."""
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-p",
            str(self.port),
        ]

    @property
    def git_ssh_command(self) -> str:
        return shlex.join(self.ssh_argv)

    def url(self, path: str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}/{path}"

    def ssh(self, *command: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run ``ssh USER@127.0.0.1 COMMAND...`` (no command: ask for a shell)."""
        return subprocess.run(
            [*self.ssh_argv, f"{self.user}@127.0.0.1", *command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def keygen(path: Path, comment: str = "dev@laptop") -> Path:
    """A new ed25519 key pair at ``path`` and ``path.pub``; returns the public half."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path.with_name(path.name + ".pub")


@contextmanager
def running_sshd(directory: Path, authorized_keys: Path) -> Iterator[Sshd]:
    """Start sshd as our child; stop it by its pid at the end."""
    if not SSHD.exists():
        pytest.skip("sshd is not installed (bin/setup installs openssh-server)")
    if not PRIVSEP_DIR.is_dir():
        if os.geteuid() != 0:
            pytest.skip(f"sshd needs {PRIVSEP_DIR}, and only root may make it")
        PRIVSEP_DIR.mkdir(mode=0o755)
    directory.mkdir()
    host_key = directory / "host_key"
    keygen(host_key, "dokuen-test-host")
    port = free_port_block(1)[0]
    config = directory / "sshd_config"
    config.write_text(
        textwrap.dedent(
            f"""\
            Port {port}
            ListenAddress 127.0.0.1
            HostKey {host_key}
            PidFile {directory / "sshd.pid"}
            AuthorizedKeysFile {authorized_keys}
            # The test's temporary directories are not root-owned all the way up.
            StrictModes no
            UsePAM no
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin prohibit-password
            """
        )
    )
    log = directory / "sshd.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdout=stderr, stderr=stderr
        )
    try:
        wait_for(lambda: _listening(port) or process.poll() is not None, "sshd to listen")
        assert process.poll() is None, log.read_text()
        yield Sshd(
            port=port,
            user=getpass.getuser(),
            client_key=directory / "client_key",
            known_hosts=directory / "known_hosts",
            log=log,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
