"""Benchmark git push deploys and rollbacks (issue 4).

Run it from the repository root::

    python bench/deploy.py            # 5 pushes of each app, 5 rollbacks
    python bench/deploy.py --quick    # 2 of each: a smoke run

It starts a fresh dokuend (managed nginx when installed, else none) in a temporary
directory and measures, from the start of ``git push`` to the first answer of the new
release (through nginx when it runs), each push changing the answer:

1. a Procfile-only app (target: 0.3 s, issue 17; issue 4 asked for under 3 s);
2. a python app with one dependency (six) on a warm build cache (target: 1.5 s, issue 17;
   the first, cold push is reported apart);
3. ``dokuenctl rollback`` to the previous release until its answer comes back (target:
   under 2 s).

No peer runs here: piku and dokku need a whole machine of their own (dokku a docker
daemon), so the targets of the issue are the yardstick. Results go to
``bench/results/deploy.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import ROOT, BenchError, Dokuend, free_port, wait_for

RESULTS = ROOT / "bench" / "results" / "deploy.json"
TARGETS = {"procfile": 0.3, "python_warm": 1.5, "rollback": 2.0}

SERVER_PY = """\
import http.server, os, pathlib
BODY = pathlib.Path("version.txt").read_bytes()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def url(daemon: Dokuend, app: str) -> tuple[int, str | None]:
    """Where the app answers: nginx with its Host, or its first web port."""
    if daemon.settings["DOKUEN_NGINX"] == "managed":
        return int(daemon.settings["DOKUEN_HTTP_PORT"]), f"{app}.localhost"
    rows = json.loads(daemon.ctl("ps", app, "--json").stdout)
    return int(rows[0]["port"]), None


def answer(daemon: Dokuend, app: str) -> str | None:
    try:
        port, host = url(daemon, app)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/", headers={"Host": host} if host else {})
        response = connection.getresponse()
        body = response.read().decode()
        connection.close()
    except (OSError, ValueError, IndexError, json.JSONDecodeError):
        return None
    return body if response.status == 200 else None


class Repo:
    """A working copy whose pushes go to the app's repository in DOKUEN_HOME."""

    def __init__(self, path: Path, remote: Path, files: dict[str, str]) -> None:
        self.path, self.remote = path, remote
        path.mkdir()
        for name, text in files.items():
            (path / name).write_text(text)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        result = subprocess.run(
            ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
            cwd=self.path,
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BenchError(f"git {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout + result.stderr

    def push(self, daemon: Dokuend, app: str, version: str) -> float:
        """Commit a new answer, push it, and return the seconds until it is served."""
        (self.path / "version.txt").write_text(version)
        self.git("add", "-A")
        self.git("commit", "-qm", version)
        began = time.monotonic()
        self.git("push", "-q", str(self.remote), "main")
        # Polled every 10 ms: the time until the answer is what is measured.
        wait_for(lambda: answer(daemon, app) == version, 60, f"{app} to answer {version}", 0.01)
        return time.monotonic() - began


def summary(seconds: list[float], target: float | None) -> dict[str, Any]:
    median = statistics.median(seconds)
    result: dict[str, Any] = {
        "runs": [round(s, 3) for s in seconds],
        "median": round(median, 3),
        "max": round(max(seconds), 3),
    }
    if target is not None:
        result["target"] = target
        result["median_over_target"] = round(median / target, 3)
    return result


def show(name: str, stats: dict[str, Any]) -> None:
    line = f"  {name:<26} median {stats['median']:.2f} s, max {stats['max']:.2f} s"
    if "target" in stats:
        verdict = "meets" if stats["max"] < stats["target"] else "MISSES"
        line += f" ({stats['median_over_target']:.2f}x the {stats['target']:g} s target: {verdict})"
    print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 pushes and rollbacks each")
    args = parser.parse_args()
    runs = 2 if args.quick else 5
    nginx = shutil.which("nginx") is not None or os.access("/usr/sbin/nginx", os.X_OK)
    tmp = Path(tempfile.mkdtemp(prefix="dokuen-deploy-bench-"))
    settings = {
        "DOKUEN_PORT_RANGE": "21100-21199",
        "DOKUEN_NGINX": "managed" if nginx else "off",
        "DOKUEN_HTTP_PORT": str(free_port()),
        "DOKUEN_HTTP_ADDR": "127.0.0.1",
    }
    daemon = Dokuend(tmp / "home", settings)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "cores": os.cpu_count(),
        "nginx": nginx,
    }
    try:
        daemon.start()
        print(f"dokuend with nginx {'managed' if nginx else 'off'}; {runs} runs each")
        for app in ("plain", "py"):
            daemon.ctl("apps:create", app)
        remote = daemon.home / "apps"
        plain = Repo(
            tmp / "plain",
            remote / "plain/repo.git",
            {"Procfile": "web: python3 server.py\n", "server.py": SERVER_PY},
        )
        pushes = [plain.push(daemon, "plain", f"plain {n}") for n in range(runs + 1)]
        results["procfile"] = summary(pushes[1:], TARGETS["procfile"])
        results["procfile_first_push"] = round(pushes[0], 3)
        python = Repo(
            tmp / "py",
            remote / "py/repo.git",
            {
                "Procfile": "web: python server.py\n",
                "server.py": "import six\n" + SERVER_PY,
                "requirements.txt": "six==1.17.0\n",
            },
        )
        cold = python.push(daemon, "py", "py 0")
        warm = [python.push(daemon, "py", f"py {n}") for n in range(1, runs + 1)]
        results["python_cold"] = round(cold, 3)
        results["python_warm"] = summary(warm, TARGETS["python_warm"])
        rollbacks = []
        newest = json.loads(daemon.ctl("releases", "plain", "--json").stdout)[0]["version"]
        for n in range(runs):  # back to the one before, then to the newest again, ...
            before = answer(daemon, "plain")
            began = time.monotonic()
            daemon.ctl("rollback", "plain", *([newest] if n % 2 else []))
            wait_for(
                lambda: answer(daemon, "plain") not in (None, before),  # noqa: B023
                30,
                "rollback",
                0.01,
            )
            rollbacks.append(time.monotonic() - began)
        results["rollback"] = summary(rollbacks, TARGETS["rollback"])
    finally:
        daemon.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("git push to the new release answering:")
    show("Procfile-only app", results["procfile"])
    print(f"  {'python app, cold cache':<26} {results['python_cold']:.2f} s (first push)")
    show("python app, warm cache", results["python_warm"])
    print("dokuenctl rollback to the previous release answering:")
    show("rollback", results["rollback"])
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
