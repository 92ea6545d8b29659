"""supervise: the process supervisor. Procfile and .env in, a formation of ports and
process slots out; spawn, restart with backoff, health checks, reaping, and the unified log.

May import: the core and isolate (app-controlled files, ports and cgroups go through it).
Every module here is public: the other wings build on them.
"""

__all__ = [
    "carry",
    "clock",
    "ending",
    "envdir",
    "environment",
    "formation",
    "handed",
    "handover",
    "health",
    "intake",
    "keeper",
    "latch",
    "lines",
    "logfile",
    "logmux",
    "parking",
    "ports",
    "process",
    "procfile",
    "readiness",
    "reaper",
    "record",
    "restart",
    "slotconfig",
    "spawn",
    "streams",
]
DEPENDS_ON: tuple[str, ...] = ("isolate",)
