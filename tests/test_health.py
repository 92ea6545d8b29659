"""The health probe against real sockets: a TCP connect, or an HTTP GET and its status."""

import anyio
import anyio.abc
import pytest

from dokuen.supervise.health import probe

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
