"""A real S3 endpoint on loopback for the tests: moto's standalone server in a subprocess of
its own, stopped by its PID."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-never-shown",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class MotoServer:
    endpoint: str

    @property
    def environ(self) -> dict[str, str]:
        """What S3Storage needs to talk to this server."""
        return {**CREDENTIALS, "DOKUEN_BACKUP_ENDPOINT_URL": self.endpoint}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def moto_server(log: Path, **settings: str) -> Iterator[MotoServer]:
    """Start ``python -m moto.server`` on a free loopback port (with moto's ``settings`` in
    its environment); stop it on exit."""
    port = free_port()
    env = {**os.environ, **CREDENTIALS, **settings}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=output,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's server did not start: {log.read_text()}") from None
                time.sleep(0.05)
        yield MotoServer(f"http://127.0.0.1:{port}")
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
