"""Re-executing dokuend in place (``dokuenctl daemon:reload``, SIGUSR2, ``systemctl reload``):
``execv`` of the same entry point, in the same process. The pid stays, so every app process
and the nginx master stay its children; they are adopted by the new image from their
records (supervise/record.py) and their output waits in their FIFOs (supervise/keeper.py).
Nothing is stopped and nothing is unwound: the task tree is simply replaced.

The new program is tried first (``--version`` of the same command line, which imports the
daemon): a broken upgrade is reported and the running daemon goes on.
"""

import os
import subprocess
import sys
from collections.abc import Mapping

import structlog

log = structlog.get_logger()

CHECK_TIMEOUT = 60.0


def command_line() -> list[str]:
    """How this dokuend was started: the interpreter and its arguments (the script, -m)."""
    return [sys.executable, *sys.orig_argv[1:]]


def check(argv: list[str], environ: Mapping[str, str]) -> str | None:
    """Whether the program at ``argv`` starts (blocking): None, or why not in one line."""
    try:
        result = subprocess.run(
            [*argv, "--version"],
            env=dict(environ),
            capture_output=True,
            timeout=CHECK_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the new dokuend does not start: {exc}"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else f"exit code {result.returncode}"
        return f"the new dokuend does not start ({last}); fix the installation and try again"
    return None


def execute(argv: list[str], environ: Mapping[str, str]) -> OSError:
    """Replace this process with ``argv``; returns only if that failed."""
    log.info("daemon.reexec", argv=argv)
    try:
        os.execve(argv[0], argv, dict(environ))  # noqa: S606 (the same program, no shell)
    except OSError as exc:
        return exc
    raise AssertionError("execve returned")  # pragma: no cover
