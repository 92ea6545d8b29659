"""The daemon starts light: what only some requests need (a build's YAML, a backup schedule's
cron parser, S3, the client's terminal rendering) is imported when first needed, never at
start, so that an idle dokuend's memory stays what docs/benchmarks.md measures."""

import json
import subprocess
import sys

# Each of these costs the daemon resident memory for its whole life (docs/benchmarks.md,
# workload 3), and only some requests use it.
HEAVY = (
    "yaml",  # bin/release output, read by a build
    "croniter",  # backup schedules
    "dateutil",  # croniter's
    "difflib",  # "did you mean", for a name not found
    "boto3",  # S3 backup targets
    "botocore",
    "rich",  # dokuenctl's tables and colours
    "pygments",
    "psycopg",
)


# A None entry in sys.modules is a module kept out on purpose (dokuend does that to rich).
LOADED = "[name for name, module in sys.modules.items() if module is not None]"


def started_modules(code: str) -> set[str]:
    shown = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json\nprint(json.dumps({LOADED}))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {name.split(".")[0] for name in json.loads(shown.stdout)}


def test_the_daemon_starts_without_the_heavy_modules() -> None:
    loaded = started_modules("import dokuen.cli.dokuend, dokuen.daemon")
    assert "dokuen" in loaded  # it did import the daemon
    assert sorted(loaded & set(HEAVY)) == []


def test_the_heavy_modules_still_load_where_they_are_needed() -> None:
    """The lazy imports are real: parsing a schedule and a release pulls them in."""
    loaded = started_modules(
        "from dokuen.backup.schedule import check_cron; check_cron('0 3 * * *')\n"
        "from dokuen.deploy.buildpack import parse_release; parse_release('{}', 'x')"
    )
    assert {"croniter", "yaml"} <= loaded
