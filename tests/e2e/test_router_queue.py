"""The router socket as systemd hosts have it (net.unix.max_dgram_qlen = 512, read in turns):
with dokuend frozen, nginx still answers every request at once, the lines that fit in the
socket arrive whole once dokuend reads again, and the ones that did not are counted as not
sent, exactly.

The queue length is a setting of the network namespace, so dokuend (and its nginx) runs in
a namespace of its own with 512, whatever this machine's is, and nothing else the suite
runs meanwhile sees it; the requests are made from inside that namespace (nsenter)."""

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Dokuen, free_port_block, wait_for, write_app
from tests.e2e.test_nginx import NGINX, WEB
from tests.e2e.test_router import router_lines

pytestmark = pytest.mark.skipif(
    NGINX is None
    or os.geteuid() != 0
    or not shutil.which("unshare")
    or not shutil.which("nsenter"),
    reason="needs nginx, root, unshare and nsenter",
)
QUEUE = 512
# Run with dokuend's path as its argument: loopback up (SIOCSIFFLAGS: up, loopback,
# running), the namespace's queue length set, then dokuend in its place.
IN_A_NAMESPACE = f"""
import fcntl, os, socket, struct, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", 0x1 | 0x8 | 0x40))
with open("/proc/sys/net/unix/max_dgram_qlen", "w") as qlen:
    qlen.write("{QUEUE}")
os.execv(sys.argv[1], sys.argv[1:])
"""
# Inside the namespace: COUNT requests on 8 connections at once, the statuses and time.
CLIENT = """
import concurrent.futures, http.client, json, sys, time
port, host, prefix, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
def get(n):
    for attempt in range(100):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", f"{prefix}{n}", headers={"Host": host})
            return connection.getresponse().status
        except OSError:
            if count > 1:
                raise
            time.sleep(0.1)  # waiting for nginx to answer at all
        finally:
            connection.close()
started = time.monotonic()
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    statuses = list(pool.map(get, range(count)))
print(json.dumps({"statuses": statuses, "elapsed": time.monotonic() - started}))
"""


@pytest.fixture
def namespaced(tmp_path: Path) -> Iterator[Dokuen]:
    port = free_port_block(1)[0]
    daemon = Dokuen(
        home=tmp_path / "home",
        ports=free_port_block(),
        extra_env={
            "DOKUEN_NGINX": "managed",
            "DOKUEN_HTTP_PORT": str(port),
            "DOKUEN_HTTP_ADDR": "127.0.0.1",
        },
        launcher=("unshare", "--net", "--", sys.executable, "-c", IN_A_NAMESPACE),
    )
    daemon.start()
    try:
        yield daemon
    finally:
        if daemon.process is not None:
            daemon.terminate()


def requests(daemon: Dokuen, prefix: str, count: int) -> dict[str, Any]:
    assert daemon.process is not None
    result = subprocess.run(
        [
            *("nsenter", f"--net=/proc/{daemon.process.pid}/ns/net", "--"),
            *(sys.executable, "-c", CLIENT),
            *(daemon.extra_env["DOKUEN_HTTP_PORT"], "blog.localhost", prefix, str(count)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_a_full_queue_of_512_drops_lines_without_slowing_nginx_and_counts_each(
    namespaced: Dokuen, apps_dir: Path
) -> None:
    namespaced.deploy("blog", write_app(apps_dir / "blog", WEB))
    assert requests(namespaced, "/warm/", 1)["statuses"] == [200]
    router = json.loads(namespaced.ctl("status", "--json").stdout)["nginx"]["router"]
    assert router["queue"] == QUEUE  # the socket was made in the namespace: read in turns
    wait_for(
        lambda: [line for line in router_lines(namespaced, "blog") if "/warm/" in line],
        "the first request's line",
    )
    count = QUEUE + 300
    assert namespaced.process is not None
    namespaced.process.send_signal(signal.SIGSTOP)
    try:
        flood = requests(namespaced, "/flood/", count)
    finally:
        namespaced.process.send_signal(signal.SIGCONT)
    assert flood["statuses"] == [200] * count
    assert flood["elapsed"] < 30, f"{count} requests took {flood['elapsed']:.1f}s, dokuend frozen"

    def arrived() -> list[str]:
        lines = [line for line in router_lines(namespaced, "blog") if "/flood/" in line]
        status = json.loads(namespaced.ctl("status", "--json").stdout)["nginx"]["router"]
        return lines if len(lines) + status["unsent"] >= count else []

    lines = wait_for(arrived, "every flood request as a line or as not sent")
    paths = {line.split('path="')[1].split('"')[0] for line in lines}
    assert len(paths) == len(lines)  # each request's line once
    # More than the kernel's default queue holds; the kernel takes one more than the
    # length (a queue is full once it holds more than max_dgram_qlen).
    assert 10 < len(lines) <= QUEUE + 1
    status = json.loads(namespaced.ctl("status", "--json").stdout)["nginx"]["router"]
    assert status["dropped"] == status["malformed"] == status["refused"] == 0
    assert status["unsent"] == count - len(lines)
    # Read again: a request now is a line again.
    assert requests(namespaced, "/after/", 1)["statuses"] == [200]
    wait_for(
        lambda: [line for line in router_lines(namespaced, "blog") if "/after/" in line],
        "the line of a request after the flood",
    )
