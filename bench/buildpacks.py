"""Benchmark the bundled buildpacks (issue 16) and the steps of a git push (issue 17).

Run it from the repository root::

    python bench/buildpacks.py            # every app, cold and warm; 3 pushes of each kind
    python bench/buildpacks.py --quick    # the push breakdown and the small apps only

It starts a fresh dokuend (managed nginx when installed) in a temporary directory and:

1. pushes a Procfile-only app and a requirements.txt app (six) with ``git push``, each
   push changing the answer, and splits the time from the start of the push to the first
   answer of the new release into its steps. The pusher's output lines are stamped as they
   arrive and the daemon's log events are stamped by dokuend (same clock): receive (git
   receive-pack and the hook's start, to "Deploying"), unpack (the commit's tree exported,
   to "Building"), detect, compile, slug (bin/release and the record, to "Process types"),
   release phase, start (to "web.1 started"), health check (to "answers"), switch (nginx
   and the old process, to "deployed"), the hook's end (to the end of git push) and the
   first answer through nginx;
2. deploys each test app with ``dokuenctl deploy`` twice from the same source: the first
   build has an empty build cache (cold), the second reuses it (warm).

Results go to ``bench/results/buildpacks.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploy import SERVER_PY, Repo, answer
from harness import ROOT, BenchError, Dokuend, free_port, wait_for

RESULTS = ROOT / "bench" / "results" / "buildpacks.json"
APPS = ROOT / "tests" / "e2e" / "apps"
TARGETS = {"procfile": 0.3, "python": 1.5}
STEPS = (
    "receive",
    "unpack",
    "detect",
    "compile",
    "slug",
    "release phase",
    "start",
    "health check",
    "switch",
    "hook end",
    "first answer",
)
SIX_SERVER = "import six\n" + SERVER_PY


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def log_events(daemon: Dokuend, app: str, since: float) -> list[tuple[float, str]]:
    events = []
    for line in (daemon.home / "logs" / "dokuen.log").read_text(errors="replace").splitlines():
        when, _, rest = line.partition(" ")
        if rest.startswith(f"{app}[dokuen]: ") and stamp(when) >= since:
            events.append((stamp(when), rest.split(": ", 1)[1]))
    return events


def first(lines: list[tuple[float, str]], pattern: str, after: float = 0.0) -> float:
    for when, text in lines:
        if when >= after and re.search(pattern, text):
            return when
    raise BenchError(f"no line matching {pattern!r}")


def timed_push(daemon: Dokuend, repo: Repo, app: str, version: str) -> dict[str, float]:
    """Push a commit that changes the answer; return each step's seconds and the total."""
    (repo.path / "version.txt").write_text(version)
    repo.git("add", "-A")
    repo.git("commit", "-qm", version)
    began = time.time()
    push = subprocess.Popen(
        ["git", "push", "-q", str(repo.remote), "main"],
        cwd=repo.path,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert push.stderr is not None
    said = [(time.time(), line.rstrip()) for line in push.stderr]
    if push.wait() != 0:
        raise BenchError("git push failed:\n" + "\n".join(text for _, text in said))
    pushed = time.time()
    wait_for(lambda: answer(daemon, app) == version, 60, f"{app} to answer {version}", 0.005)
    answered = time.time()
    events = log_events(daemon, app, began)
    built = first(said, r"-----> Process types")
    compiled = max(when for when, text in said if when <= built and "Process types" not in text)
    started = first(events, r"web\.\d+ started", built)
    release = [e for e in events if "release" in e[1] and e[1].startswith("release")]
    marks = {
        "receive": first(said, r"-----> Deploying"),
        "unpack": first(said, r"-----> Building"),
        "detect": first(said, r"app detected"),
        "compile": compiled,
        "slug": built,
        "release phase": max([built, *(when for when, _ in release)]),
        "start": started,
        "health check": first(events, r"answers", started),
        "switch": first(events, r"^deployed v", started),
        "hook end": pushed,
        "first answer": answered,
    }
    steps, last = {}, began
    for name in STEPS:
        steps[name] = max(0.0, marks[name] - last)
        last = max(last, marks[name])
    steps["total"] = answered - began
    return steps


def push_breakdown(daemon: Dokuend, tmp: Path, runs: int) -> dict[str, Any]:
    found: dict[str, Any] = {}
    apps = {
        "procfile": {"Procfile": "web: python3 server.py\n", "server.py": SERVER_PY},
        "python": {
            "Procfile": "web: python server.py\n",
            "server.py": SIX_SERVER,
            "requirements.txt": "six==1.17.0\n",
        },
    }
    for kind, files in apps.items():
        daemon.ctl("apps:create", kind)
        repo = Repo(tmp / f"push-{kind}", daemon.home / "apps" / kind / "repo.git", files)
        cold = timed_push(daemon, repo, kind, f"{kind} 0")
        warm = [timed_push(daemon, repo, kind, f"{kind} {n}") for n in range(1, runs + 1)]
        median = {step: statistics.median(run[step] for run in warm) for step in warm[0]}
        found[kind] = {
            "cold_total": round(cold["total"], 3),
            "warm_runs": [round(run["total"], 3) for run in warm],
            "warm_median_steps": {step: round(value, 3) for step, value in median.items()},
            "target": TARGETS[kind],
        }
    return found


def write_apps(top: Path, quick: bool) -> dict[str, Path]:
    apps: dict[str, Path] = {}
    for name, lock in (("pipenv", "pipenv"), ("poetry", "poetry"), ("uv", "uvlock")):
        shutil.copytree(APPS / lock, top / name)
        (top / name / "server.py").write_text(SIX_SERVER)
        (top / name / "Procfile").write_text("web: python server.py\n")
        apps[name] = top / name
    req = top / "requirements"
    req.mkdir()
    (req / "requirements.txt").write_text("six==1.17.0\n")
    (req / "server.py").write_text(SIX_SERVER)
    (req / "Procfile").write_text("web: python server.py\n")
    apps["requirements"] = req
    for directory in apps.values():
        (directory / "version.txt").write_text("bench\n")
    if quick:
        return apps
    httpbin = top / "httpbin"
    httpbin.mkdir()
    (httpbin / "requirements.txt").write_text("httpbin==0.10.4\ngunicorn==23.0.0\n")
    (httpbin / "Procfile").write_text("web: gunicorn httpbin:app --bind 127.0.0.1:$PORT\n")
    apps["httpbin"] = httpbin
    shutil.copytree(APPS / "django", top / "django")
    apps["django"] = top / "django"
    node = top / "node22"
    node.mkdir()
    package = {"name": "node22", "version": "1.0.0", "engines": {"node": "22.x"}}
    (node / "package.json").write_text(json.dumps(package))
    (node / "server.js").write_text(
        'require("http").createServer((q, s) => s.end(process.version))'
        '.listen(process.env.PORT, "127.0.0.1");\n'
    )
    apps["node22"] = node
    return apps


def cold_and_warm(daemon: Dokuend, apps: dict[str, Path]) -> dict[str, Any]:
    found = {}
    for name, source in apps.items():
        daemon.ctl("apps:create", f"bp-{name}")
        times = []
        for _ in range(2):
            began = time.monotonic()
            done = daemon.ctl("deploy", f"bp-{name}", str(source), check=False)
            if done.returncode != 0:
                raise BenchError(f"deploy {name}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
            times.append(time.monotonic() - began)
        found[name] = {"cold": round(times[0], 3), "warm": round(times[1], 3)}
        print(f"  {name:<14} cold {times[0]:5.2f} s   warm {times[1]:5.2f} s")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer pushes, small apps only")
    args = parser.parse_args()
    runs = 2 if args.quick else 3
    nginx = shutil.which("nginx") is not None or os.access("/usr/sbin/nginx", os.X_OK)
    tmp = Path(tempfile.mkdtemp(prefix="dokuen-buildpacks-bench-"))
    settings = {
        "DOKUEN_PORT_RANGE": "21200-21299",
        "DOKUEN_NGINX": "managed" if nginx else "off",
        "DOKUEN_HTTP_PORT": str(free_port()),
        "DOKUEN_HTTP_ADDR": "127.0.0.1",
    }
    daemon = Dokuend(tmp / "home", settings)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "cores": os.cpu_count(),
        "load": os.getloadavg()[0],
        "nginx": nginx,
    }
    try:
        daemon.start()
        print(f"dokuend with nginx {'managed' if nginx else 'off'}; load {os.getloadavg()[0]:.1f}")
        results["push"] = push_breakdown(daemon, tmp, runs)
        for kind, found in results["push"].items():
            steps = found["warm_median_steps"]
            print(f"git push of the {kind} app, warm median {steps['total']:.2f} s ", end="")
            print(f"(target {found['target']:g} s; cold {found['cold_total']:.2f} s):")
            print("  " + ", ".join(f"{step} {steps[step]:.3f}" for step in STEPS))
        print("dokuenctl deploy, cold (empty build cache) and warm (same source again):")
        results["deploys"] = cold_and_warm(daemon, write_apps(tmp / "apps", args.quick))
    finally:
        daemon.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
