"""bench/.venv: the interpreter bench/run.py measures with, and where the peers live.

run.py starts with whatever Python runs it; ``bootstrap`` makes bench/.venv, installs psutil
and the peers (honcho, supervisor, circus) there from PyPI, and re-execs run.py with that
Python. Until then psutil may be missing: the modules beside run.py import it in a ``try``
and use it only in functions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness import ROOT

VENV = ROOT / "bench" / ".venv"
VENV_BIN = VENV / "bin"
PEERS = ("honcho", "supervisord", "circus")
PIP_PACKAGES = {"honcho": "honcho", "supervisord": "supervisor", "circus": "circus"}


def bootstrap(only: list[str] | None, script: Path) -> None:
    """Make bench/.venv, install psutil and the peers there, and re-exec ``script`` (bench/run.py)
    with its Python and the same arguments.

    Returns (without doing anything) when already running inside bench/.venv.
    """
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV_BIN / "python"
    if not python.exists():
        print(f"creating {VENV.relative_to(ROOT)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    packages = ["psutil"] + [PIP_PACKAGES[name] for name in PEERS if not only or name in only]
    for package in packages:
        print(f"pip install {package} (into {VENV.relative_to(ROOT)})", flush=True)
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", package],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "WARNING" not in line]
            print(f"  could not install {package}: " + "\n  ".join(errors[-8:]), flush=True)
            if package == "psutil":
                sys.exit("psutil is needed to measure anything; giving up")
    os.execv(str(python), [str(python), str(script.resolve()), *sys.argv[1:]])
