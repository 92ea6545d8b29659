"""What every workload of bench/run.py takes and gives: the sizes of a run (full or
``--quick``) and its figures."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    printers: int = 16
    lines: int = 50_000
    spawn: int = 200
    idle: int = 100
    idle_seconds: float = 20.0
    kills: int = 20
    stubborn: int = 10
    grace: int = 2
    log_timeout: float = 150.0


FULL = Sizes()
QUICK = Sizes(
    printers=4,
    lines=5_000,
    spawn=20,
    idle=10,
    idle_seconds=3.0,
    kills=5,
    stubborn=4,
    log_timeout=30.0,
)

Metrics = dict[str, float | int | None]
