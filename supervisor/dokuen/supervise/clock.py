"""The clock a supervisor waits on: real time in production, a fake that tests drive (the
restart backoff and grace periods are decided against it, never against time itself)."""

import time
from typing import Protocol

import anyio


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)
