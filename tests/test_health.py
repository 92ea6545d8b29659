"""The health probe against real sockets: a TCP connect, or an HTTP GET and its status."""

import os
import subprocess
import time

import anyio
import anyio.abc
import pytest

from dokuen.supervise.health import HealthCheck, probe, serving
from tests.test_listeners import free_port, listening

pytestmark = pytest.mark.anyio


async def serve(status: bytes, task_status: anyio.abc.TaskStatus[int]) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            request = await stream.receive()
            assert request.startswith(b"GET /health HTTP/1.0\r\n")
            await stream.send(b"HTTP/1.0 " + status + b"\r\nContent-Length: 0\r\n\r\n")

    async with listener:
        task_status.started(port)
        await listener.serve(answer)


@pytest.mark.parametrize(
    ("status", "healthy"),
    [
        (b"200 OK", True),
        (b"204 No Content", True),
        (b"302 Found", True),
        (b"404 Not Found", False),
        (b"500 Internal Server Error", False),
        (b"garbage", False),
    ],
)
async def test_an_http_check_wants_2xx_or_3xx(status: bytes, healthy: bool) -> None:
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, status)
        assert await probe(port, "/health") is healthy
        assert await probe(port, None) is True  # a TCP connect is enough without a path
        tg.cancel_scope.cancel()


async def test_nothing_listening_is_not_healthy() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    assert await probe(port, None) is False
    assert await probe(port, "/health") is False


async def test_serving_passes_on_the_process_own_listener() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener:
        assert await serving(HealthCheck(None, 10), port, os.getpid(), "web.1") is None


async def test_serving_fails_at_once_when_another_process_holds_the_port() -> None:
    port = free_port()
    holder = listening(port)
    app = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        began = time.monotonic()
        reason = await serving(HealthCheck(None, 30), port, app.pid, "web.1")
        assert reason == f"port {port} is held by pid {holder.pid} (not web.1's)"
        assert time.monotonic() - began < 10  # not after the boot timeout
    finally:
        for process in (holder, app):
            process.kill()
            process.wait()
        assert holder.stdout is not None
        holder.stdout.close()


async def test_serving_gives_up_after_the_boot_timeout() -> None:
    port = free_port()
    reason = await serving(HealthCheck("/health", 0.3), port, os.getpid(), "web.1")
    assert reason == f"did not answer GET /health on port {port} within 0.3s"
