"""What carrying an app's environment past root's steps costs each process start
(isolate/carried.py): ``/bin/true`` started directly and through ``RESTORE``, alternated,
with an environment of 32 variables. Run under the shared lock:

    flock /tmp/dokuen-bench.lock python bench/carried.py
"""

import statistics
import subprocess
import time

from dokuen.isolate.carried import carry

ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", **{f"VAR_{i}": "x" * 40 for i in range(30)}}
STARTS = 300


def per_start(argv: list[str], env: dict[str, str]) -> float:
    """Milliseconds a start takes, on average over STARTS."""
    began = time.perf_counter()
    for _ in range(STARTS):
        subprocess.run(argv, env=env, check=True)
    return (time.perf_counter() - began) / STARTS * 1000


def main() -> None:
    argv, env = carry(ENV, ["/bin/true"])
    extra = []
    for run in range(3):
        plain, carried = per_start(["/bin/true"], ENV), per_start(argv, env)
        extra.append(carried - plain)
        print(f"run {run}: direct {plain:.3f} ms, carried {carried:.3f} ms")
    print(f"median extra per start: {statistics.median(extra):.3f} ms")


if __name__ == "__main__":
    main()
